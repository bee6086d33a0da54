"""The training steps: FastStep gives the eager reference TrainStep's numbers; precision keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncmse.errors import ConfigError
from ncmse.train.config import resolve_config
from ncmse.train.data import TensorLoader
from ncmse.train.losses import build_loss
from ncmse.train.models import build_model
from ncmse.train.step import (
    PRECISIONS,
    FastStep,
    Step,
    TrainStep,
    autocast_for,
    check_precision,
    float32_math,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster than two on a busy machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(4, 1, 6, 6, generator=g)[y] + torch.randn(n, 1, 6, 6, generator=g)
    return x, y


def _setup(model_name: str = "cnn", seed: int = 0, lr: float = 0.05, wd: float = 5e-4):
    torch.manual_seed(seed)
    kwargs = {"width": 4, "hidden": 16} if model_name == "cnn" else {"width": 16, "depth": 2}
    model = build_model(model_name, num_classes=4, in_channels=1, image_size=6, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    crit = build_loss("mse", num_classes=4, weight_decay=wd).module
    return model, opt, crit


def _epoch(step, loader: TensorLoader, epoch: int) -> tuple[float, float]:
    """An epoch loop around any step with the Step contract."""
    step.model.train()
    loader.set_epoch(epoch)
    total, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
    for xb, yb in loader:
        objective, right = step(xb, yb)
        total += objective * len(yb)
        correct += right
        seen += len(yb)
    return float(total) / seen, float(correct) / seen


@pytest.mark.parametrize("model_name", ["cnn", "mlp"])
def test_fast_step_equals_the_reference_step_bit_for_bit(model_name: str) -> None:
    x, y = _data()
    m1, o1, c1 = _setup(model_name)
    m2, o2, c2 = _setup(model_name)
    l1 = TensorLoader(x, y, 32, shuffle=True, seed=3)
    l2 = TensorLoader(x, y, 32, shuffle=True, seed=3)
    ref = TrainStep(m1, o1, c1)
    fast = FastStep(m2, o2, c2, precision="fp32", cuda_graph=True, batch_size=32)
    assert not fast.graphed  # cuda_graph is a no-op off CUDA
    for epoch in (1, 2, 3):  # 150 = 4 x 32 + 22: a partial batch every epoch
        assert _epoch(fast, l2, epoch) == _epoch(ref, l1, epoch)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(o1.state_dict()["state"].values(), o2.state_dict()["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert fast.describe()["last_partial_batch"].startswith("eager")


def test_precision_validation_and_contexts() -> None:
    assert PRECISIONS == ("fp32", "tf32", "bf16")
    for p in PRECISIONS:
        assert check_precision(p) == p
    with pytest.raises(ConfigError, match="precision='fp16'.*fp32"):
        check_precision("fp16")
    with pytest.raises(ConfigError, match="precision"):
        resolve_config("tiny", ["precision=half"])
    cfg = resolve_config("tiny", ["precision=bf16", "channels_last=true", "cuda_graph=false"])
    assert (cfg.precision, cfg.channels_last, cfg.cuda_graph) == ("bf16", True, False)
    assert resolve_config("tiny").precision == "tf32"
    with float32_math("fp32", torch.device("cpu")):  # no-op off CUDA
        pass
    with autocast_for("bf16", torch.device("cpu")):
        out = nn.Linear(3, 2)(torch.randn(4, 3))
    assert out.dtype == torch.bfloat16
    with autocast_for("tf32", torch.device("cpu")):
        assert nn.Linear(3, 2)(torch.randn(4, 3)).dtype == torch.float32


def test_bf16_step_trains_on_cpu_and_keeps_float32_state() -> None:
    x, y = _data()
    model, opt, crit = _setup("cnn")
    step = FastStep(model, opt, crit, precision="bf16")
    loss, acc = _epoch(step, TensorLoader(x, y, 32, shuffle=True), 1)
    assert loss == loss and 0.0 <= acc <= 1.0
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_channels_last_matches_contiguous_closely() -> None:
    x, y = _data()
    m1, o1, c1 = _setup("cnn")
    m2, o2, c2 = _setup("cnn")
    s1, s2 = FastStep(m1, o1, c1), FastStep(m2, o2, c2, channels_last=True)
    l1, l2 = TensorLoader(x, y, 32, shuffle=True), TensorLoader(x, y, 32, shuffle=True)
    for epoch in (1, 2):
        assert _epoch(s1, l1, epoch) == pytest.approx(_epoch(s2, l2, epoch), rel=1e-5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: replay re-runs what was 'captured'."""

    def __init__(self, fn):
        self.fn = fn
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.fn()


def _pretend_cuda(step: FastStep, monkeypatch) -> None:
    """Turn the graphed path on with CPU stand-ins for the side stream."""
    step.graphed = True

    def side_step(x, y):
        sx, sy = step._static
        sx.copy_(x)
        sy.copy_(y)
        return step._compute(sx, sy)

    monkeypatch.setattr(step, "_side_step", side_step)


def test_graph_bookkeeping_warmup_capture_replay_and_recapture(monkeypatch) -> None:
    """The graphed path's logic on the CPU: warm-up steps run eagerly on the static buffers,
    the capture records without running, replays run it, an lr change, a new criterion or
    :meth:`invalidate` re-capture, and the partial batch is eager. Equal to TrainStep bit for bit.
    """
    x, y = _data()
    m1, o1, c1 = _setup("cnn")
    m2, o2, c2 = _setup("cnn")
    ref = TrainStep(m1, o1, c1)
    step = FastStep(m2, o2, c2, batch_size=32, warmup_steps=2)
    _pretend_cuda(step, monkeypatch)
    graphs: list[_FakeGraph] = []

    def fake_capture() -> bool:
        step.optimizer.zero_grad(set_to_none=True)

        def run() -> None:
            step._outputs = step._compute(*step._static)

        graphs.append(_FakeGraph(run))
        step._graph, step._graph_lrs = graphs[-1], step._lrs()
        step.captures += 1
        return True

    monkeypatch.setattr(step, "_capture", fake_capture)
    l1, l2 = (
        TensorLoader(x, y, 32, shuffle=True, seed=2),
        TensorLoader(x, y, 32, shuffle=True, seed=2),
    )
    s1 = torch.optim.lr_scheduler.MultiStepLR(o1, [2], gamma=0.1)
    s2 = torch.optim.lr_scheduler.MultiStepLR(o2, [2], gamma=0.1)
    for epoch in (1, 2, 3):
        assert _epoch(step, l2, epoch) == _epoch(ref, l1, epoch)
        s1.step()
        s2.step()
    # epoch 1: 2 warm-up steps, capture, 2 replays (4 full batches); epoch 2: 4 replays;
    # epoch 3 (lr changed): re-capture, 4 replays
    assert step.captures == 2 and [g.replays for g in graphs] == [6, 4]
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    step.criterion = step.criterion  # the same module: nothing to do
    assert step._graph is not None
    step.criterion = build_loss("mse", num_classes=4, weight_decay=5e-4).module
    assert step._graph is None
    ref.criterion = step.criterion
    assert _epoch(step, l2, 4) == _epoch(ref, l1, 4)
    assert step.captures == 3


def test_failed_capture_falls_back_to_eager_with_the_same_numbers(monkeypatch) -> None:
    x, y = _data()
    m1, o1, c1 = _setup("cnn")
    m2, o2, c2 = _setup("cnn")
    ref = TrainStep(m1, o1, c1)
    step = FastStep(m2, o2, c2, batch_size=32, warmup_steps=1)
    _pretend_cuda(step, monkeypatch)

    class Broken:
        def __init__(self, *a, **k) -> None:
            raise RuntimeError("capture not supported here")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(torch.cuda, "graph", Broken)
    l1, l2 = TensorLoader(x, y, 32, shuffle=True), TensorLoader(x, y, 32, shuffle=True)
    with pytest.warns(RuntimeWarning, match="capture failed.*eager"):
        got = _epoch(step, l2, 1)
    assert got == _epoch(ref, l1, 1)
    assert not step.graphed and "capture not supported" in step.describe()["graph_capture_error"]
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_both_steps_have_the_step_interface() -> None:
    """The loop calls every Step the same way (no hasattr): pack, invalidate, describe."""
    import inspect

    wanted = {n for n, _ in inspect.getmembers(Step) if not n.startswith("_")} | {"__call__"}
    x, y = _data(n=8)
    for make in (TrainStep, lambda m, o, c: FastStep(m, o, c, precision="fp32")):
        step = make(*_setup())
        assert isinstance(step, Step)
        assert all(hasattr(step, name) for name in wanted | {"model", "pack"}), type(step)
        assert step.pack == (0, 1)
        step.invalidate()
        objective, correct = step(x, y)
        assert objective.shape == () and 0 <= int(correct) <= len(y)
    assert not isinstance(lambda x, y: (x, y), Step)  # a bare callable is not a Step
    assert TrainStep(*_setup()).describe() is None  # records no engine in summary.json
    assert FastStep(*_setup(), precision="fp32").describe()["precision"] == "fp32"
