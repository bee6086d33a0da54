"""Features of any layer, without a classifier: ``W=None`` in ``measure_features`` /
``measure_stream`` / ``NeuralCollapseMetric``, ``ncmse.measure_layers`` and the nc1-by-depth figure
(issue 21 item 4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ncmse
from ncmse.collapse.result import CLASSIFIER_METRICS, METRIC_NAMES
from ncmse.errors import InputError

C = 3
FEATURE_METRICS = [
    "nc1", "nc1_unnormalized", "nc1_trace_ratio", "cdnv", "equinorm_means", "equiangular_means",
    "maxangle_means", "etf_error_means", "loss_nc1", "loss_nc23", "loss_ls",
]  # fmt: skip


def _features(n: int = 120, p: int = 6):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % C
    H = 2 * torch.randn(C, p, generator=g, dtype=torch.float64)[y]
    return H + torch.randn(n, p, generator=g, dtype=torch.float64), y


def _nc1_reference(H: np.ndarray, y: np.ndarray) -> float:
    """tr(Σ_W Σ_B^†)/C in float64 (SPEC §2), written out."""
    means = np.stack([H[y == c].mean(0) for c in range(C)])
    mbar = (means - means.mean(0)).T
    dev = H - means[y]
    sigma_w, sigma_b = dev.T @ dev / len(y), mbar @ mbar.T / C
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / C)


def test_measure_features_without_classifier():
    H, y = _features()
    alone = ncmse.measure_features(H, y, None, num_classes=C, lam=1e-3)
    with_w = ncmse.measure_features(H, y, torch.randn(C, 6), torch.randn(C), num_classes=C,
                                    lam=1e-3)  # fmt: skip
    for name in FEATURE_METRICS:
        assert getattr(alone, name) == pytest.approx(getattr(with_w, name), rel=1e-12), name
    assert alone.snr == pytest.approx(with_w.snr, rel=1e-12)
    for name in CLASSIFIER_METRICS:
        assert math.isnan(getattr(alone, name)), name
        assert not math.isnan(getattr(with_w, name)), name  # control: measured with a classifier
    assert math.isnan(alone.loss_perp_ratio)
    assert alone.nc1 == pytest.approx(_nc1_reference(H.numpy(), y.numpy()), rel=1e-10)
    assert set(CLASSIFIER_METRICS) <= set(METRIC_NAMES)


def test_measure_stream_without_classifier_needs_one_pass_only():
    H, y = _features()
    single_use = iter([(H[:50], y[:50]), (H[50:], y[50:])])
    r = ncmse.measure_stream(single_use, None, num_classes=C, memory_budget_bytes=0)
    assert r.nc1 == pytest.approx(_nc1_reference(H.numpy(), y.numpy()), rel=1e-10)
    assert r.nc4_method == "unavailable" and math.isnan(r.nc4)


def test_bias_without_weight_is_an_error():
    H, y = _features()
    with pytest.raises(InputError, match="b was given without W"):
        ncmse.measure_features(H, y, None, torch.zeros(C), num_classes=C)


def test_metric_without_classifier():
    from ncmse.metric import NeuralCollapseMetric

    H, y = _features()
    metric = NeuralCollapseMetric(None, num_classes=C, dim=6)
    for start in range(0, 120, 40):
        metric.update(H[start : start + 40], y[start : start + 40])
    r = metric.compute()
    ref = ncmse.measure_features(H, y, None, num_classes=C)
    assert r.nc1 == pytest.approx(ref.nc1, rel=1e-12)
    assert all(math.isnan(getattr(r, name)) for name in CLASSIFIER_METRICS)
    with pytest.raises(InputError, match="num_classes .* and dim"):
        NeuralCollapseMetric(None, num_classes=C)


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, C)
        self.calls = 0

    def body(self, x):
        """The outputs of conv1 and conv2 (before their ReLU)."""
        a = self.conv1(x)
        return a, self.conv2(torch.relu(a))

    def forward(self, x):
        self.calls += 1
        return self.fc(torch.relu(self.body(x)[1]).mean(dim=(2, 3)))


def _images(n: int = 45):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % C
    x = torch.randn(C, 1, 6, 6, generator=g)[y] + 0.5 * torch.randn(n, 1, 6, 6, generator=g)
    return x.double(), y


@pytest.mark.filterwarnings("ignore::ncmse.NCMSEWarning")  # flattened: p > N
@pytest.mark.parametrize("pool", [None, "avg"])
def test_measure_layers_equals_each_layer_measured_alone_in_one_pass(pool):
    model = _ConvNet().double()
    x, y = _images()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    out = ncmse.measure_layers(model, loader, {"conv1": model.conv1, "conv2": model.conv2},
                               num_classes=C, pool=pool)  # fmt: skip
    assert list(out) == ["conv1", "conv2"]
    assert model.calls == 3  # one pass: ⌈45/16⌉ forward calls for both layers
    with torch.no_grad():
        a1, a2 = model.body(x)
    for name, act in (("conv1", a1), ("conv2", a2)):
        H = act.mean(dim=(2, 3)) if pool == "avg" else act.reshape(len(y), -1)
        ref = ncmse.measure_features(H, y, None, num_classes=C)
        assert out[name].nc1 == pytest.approx(ref.nc1, rel=1e-10), name
        assert out[name].snr == pytest.approx(ref.snr, rel=1e-10, nan_ok=True), name
        assert out[name].num_samples == len(y)
        assert all(math.isnan(getattr(out[name], m)) for m in CLASSIFIER_METRICS)
    if pool == "avg":  # an independent check where Σ_B is invertible on its range
        H = a2.mean(dim=(2, 3)).numpy()
        assert out["conv2"].nc1 == pytest.approx(_nc1_reference(H, y.numpy()), rel=1e-8)


def test_measure_layers_rejects_bad_layers():
    model = _ConvNet().double()
    x, y = _images()
    with pytest.raises(InputError, match="not a module of the model"):
        ncmse.measure_layers(model, [(x, y)], {"x": nn.Linear(2, 2)}, num_classes=C)
    shared = nn.Sequential(model.conv1, nn.ReLU())
    twice = nn.Sequential(nn.Conv2d(1, 1, 1), shared[1], shared[1])
    with pytest.raises(InputError, match="ran 2 times"):
        ncmse.measure_layers(twice.double(), [(x, y)], {"relu": shared[1]}, num_classes=C)
    with pytest.raises(InputError, match="pool must be"):
        ncmse.measure_layers(model, [(x, y)], {"c": model.conv1}, num_classes=C, pool="max")


def test_nc1_by_depth_figure(tmp_path):
    from ncmse.report.depth import plot_nc1_by_depth

    model = _ConvNet().double()
    x, y = _images()
    layers = {"conv1": model.conv1, "conv2": model.conv2}
    out = ncmse.measure_layers(model, [(x, y)], layers, num_classes=C, pool="avg")
    figure = plot_nc1_by_depth({"epoch 0": out, "epoch 1": out}, tmp_path)
    assert figure.png.stat().st_size > 1000 and figure.svg.exists()
    svg = figure.svg.read_text()
    assert "conv1" in svg and "conv2" in svg and "epoch 1" in svg


def test_measure_layers_under_ddp_drops_padding_and_a_padding_only_shard_takes_part(tmp_path):
    """2 gloo processes, odd N on a DistributedSampler with batch size 1: rank 1's last batch is
    the padding alone; both ranks get the one-process result on the N samples."""
    import torch.multiprocessing as mp

    x, y = _images(n=45)
    model = _ConvNet().double()
    ref = ncmse.measure_layers(model, [(x, y)], {"conv2": model.conv2}, num_classes=C,
                               pool="avg")["conv2"]  # fmt: skip
    mp.spawn(_ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    got = [float((tmp_path / f"nc1_{rank}").read_text()) for rank in range(2)]
    assert got == [pytest.approx(ref.nc1, rel=1e-10)] * 2


def _ddp_worker(rank: int, folder: str) -> None:
    import os

    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getppid() % 1000))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, y = _images(n=45)
        model = _ConvNet().double()
        data = TensorDataset(x, y)
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = DataLoader(data, batch_size=1, sampler=sampler)
        out = ncmse.measure_layers(model, loader, {"conv2": model.conv2}, num_classes=C,
                                   pool="avg")  # fmt: skip
        (Path(folder) / f"nc1_{rank}").write_text(repr(out["conv2"].nc1))
    finally:
        dist.destroy_process_group()
