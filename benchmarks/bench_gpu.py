"""GPU engine benchmark: s/epoch of today's loop, the fast single path and packed runs; the
measurement against the float64 floor; a fidelity check; the implied cost of the paper protocol.

Every figure is measured in this process, on this device, in this call (ratios are against the
baseline measured in the same call). Sections, in order of importance, each guarded so that one
failure never loses the others; each result is appended to ``OUT/bench_gpu.jsonl`` as it comes:

Every run is the package's own: a :class:`ncmse.train.loop.Trainer` built from the preset's
config (its optimizer, schedule, loader and step), every timed epoch the package's epoch loop
:func:`ncmse.train.loop.lockstep_epoch` (stop checks included); the benchmark only supplies the
data and, for ``today``, the eager reference step :class:`ncmse.train.step.TrainStep`.

1. ``train``  per preset (paper-fashionmnist-resnet18-mse: real data with ``--data-dir``, else
   synthetic 60k×1×28×28; paper-cifar10-resnet18-mse: synthetic 50k×3×32×32), per variant:
   warm-up steps, then ONE full timed epoch (all batches, the last partial one included);
   plus the time of one measurement of the train and test splits at the variant's precision.
   Variants: ``today`` (the eager reference step, PyTorch's default TF32 flags, no
   cudnn.benchmark), ``fp32-eager`` (strict fp32, engine eager), ``fp32-graph``, ``tf32-graph``,
   ``bf16-graph``, ``*-cl`` (channels_last).
2. ``measure``  ncmse.measure_stream / measure_features of GPU features vs the float64 HᵀH floor,
   N=50k p=512 C=10 and N=200k p=2048 C=100, batches of 1024.
3. ``packed``  K runs (different seeds and learning rates) stepped together, one CUDA graph per
   run on its own stream: one full lockstep epoch timed, K in {4, 8, 16}.
4. ``fidelity``  2 seeds × {fp32 strict, fast} of paper-fashionmnist-resnet18-mse with
   ``epochs=--fidelity-epochs`` (its own lr schedule), trained as one pack; the training split
   measured at the end: accuracy, nc1, L_perp/L.
5. ``determinism``  with deterministic algorithms, eager vs eager vs graphed steps from the same
   weights and batches, step by step (fp32 and the fast precision); packed vs alone.
5b. ``e2e``  ``ncmse train`` with the fast settings, real data, 4 epochs measured every epoch:
   killed after epoch 2 (a subprocess run by ``tests/kill_after.py``) and resumed; and a fresh
   run (wall time per epoch).
6. ``vmap``  the candidate packing by ``torch.func`` (stack_module_state + vmap, grouped
   convolutions underneath), K=8, for comparison with 3.
7. ``compile``  ``torch.compile(mode="reduce-overhead")`` of the model, for comparison with the
   hand-captured graph; ``compile-graph``: ``torch.compile`` (default mode, inductor fusion)
   inside the engine's own whole-step graph.

Usage::

    PYTHONPATH=src python benchmarks/bench_gpu.py --data-dir DIR --out OUT --budget-s 420
    PYTHONPATH=src python benchmarks/bench_gpu.py --smoke        # tiny, CPU, < 2 minutes

Times are wall-clock with ``torch.cuda.synchronize`` around the timed region.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ncmse
from ncmse.train.config import config_from_dict, resolve_config
from ncmse.train.data import DatasetBundle, load_dataset
from ncmse.train.loop import EpochTotals, Trainer, lockstep_epoch
from ncmse.train.schedule import measurement_epochs
from ncmse.train.setup import build_components, measure_split
from ncmse.train.step import TrainStep, float32_math

FASHION = "paper-fashionmnist-resnet18-mse"
#: ``--smoke``: overrides applied to every preset (a tiny CNN instead of ResNet18)
SMOKE_OVERRIDES: list[str] = []
CIFAR = "paper-cifar10-resnet18-mse"
#: the paper's protocol: 30 presets × 25 learning rates, 350 epochs each
PROTOCOL_RUNS = 30 * 25
PROTOCOL_EPOCHS = 350


# --------------------------------------------------------------------------------------------
# plumbing
# --------------------------------------------------------------------------------------------


class Recorder:
    """Appends JSON lines to ``OUT/bench_gpu.jsonl`` and keeps the budget."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = out / "bench_gpu.jsonl"
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.records: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def add(self, **record: Any) -> dict[str, Any]:
        record = {"t": round(self.elapsed(), 2), **record}
        self.records.append(record)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(_json_safe(record)) + "\n")
        print(json.dumps(_json_safe(record)), flush=True)
        return record

    def section(self, name: str, fn: Callable[[], None], min_left: float = 0.0) -> None:
        if self.left() < min_left:
            self.add(section=name, skipped=f"budget: {self.left():.0f} s left < {min_left:.0f} s")
            return
        start = self.elapsed()
        print(f"=== {name} (at {start:.1f} s, {self.left():.0f} s left)", flush=True)
        try:
            fn()
        except BudgetExhausted as exc:
            self.add(section=name, stopped=str(exc))
        except Exception as exc:  # noqa: BLE001 - a section's failure must not lose the others
            self.add(section=name, error=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc()[-3000:])  # fmt: skip
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        print(f"=== {name} done in {self.elapsed() - start:.1f} s", flush=True)

    def check(self, need_s: float, what: str) -> None:
        if self.left() < need_s:
            raise BudgetExhausted(f"{what}: {self.left():.0f} s left, needs ~{need_s:.0f} s")


class BudgetExhausted(RuntimeError):
    """Raised inside a section when the remaining budget cannot fit the next item."""


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def preset_config(preset: str, *overrides: str) -> Any:
    """The resolved preset (with the smoke overrides in ``--smoke``)."""
    return resolve_config(preset, [*SMOKE_OVERRIDES, *overrides])


def _new_stream(device: torch.device) -> Any:
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def _on(stream: Any) -> contextlib.AbstractContextManager:
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# data and runs
# --------------------------------------------------------------------------------------------


class Data:
    """Training/test tensors on the device (a :class:`DatasetBundle`), plus their provenance."""

    def __init__(self, bundle: DatasetBundle, source: str) -> None:
        self.bundle, self.source = bundle, source
        self.name, self.num_classes = bundle.name, bundle.num_classes
        self.train_x, self.train_y = bundle.train_x, bundle.train_y
        self.test_x, self.test_y = bundle.test_x, bundle.test_y


def _bundle(name: str, tx, ty, vx, vy, num_classes: int) -> DatasetBundle:
    c, size = tx.shape[1], tx.shape[-1]
    ones = torch.ones(tuple(tx.shape[1:]))
    return DatasetBundle(name, num_classes, c, size, tx, ty, vx, vy, 0 * ones, ones, True)


def synthetic(name: str, n: int, n_test: int, shape: tuple[int, ...], device) -> Data:
    g = torch.Generator().manual_seed(0)
    C = 10
    means = torch.randn(C, *shape, generator=g)

    def split(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(m) % C
        x = means[y] + 2.0 * torch.randn(m, *shape, generator=g)
        return x.to(device), y.to(device)

    tx, ty = split(n)
    vx, vy = split(n_test)
    return Data(_bundle(name, tx, ty, vx, vy, C), f"synthetic {n}x{'x'.join(map(str, shape))}")


def real_fashion(data_dir: str, device) -> Data:
    b = load_dataset("fashionmnist", data_dir=data_dir, download=False)
    on_device = DatasetBundle(b.name, b.num_classes, b.in_channels, b.image_size,
                              b.train_x.to(device), b.train_y.to(device), b.test_x.to(device),
                              b.test_y.to(device), b.mean, b.std, b.balanced)  # fmt: skip
    return Data(on_device, f"Fashion-MNIST IDX files in {data_dir}")


def bench_trainer(
    cfg: Any,
    data: Data,
    *,
    seed: int,
    lr: float | None = None,
    precision: str | None = "tf32",
    channels_last: bool = False,
    graph: bool = True,
    batch_size: int | None = None,
) -> Trainer:
    """The package's :class:`Trainer` of ``cfg`` (seed, lr, engine keys and batch size set) on
    ``data``, writing no files; ``precision=None`` swaps in the eager reference
    :class:`TrainStep` (``today``: PyTorch's float32 flags as they are)."""
    changes = {"seed": seed, "precision": precision or "tf32", "channels_last": channels_last,
               "cuda_graph": graph, "lr": cfg.lr if lr is None else lr,
               "batch_size": batch_size or cfg.batch_size}  # fmt: skip
    run_cfg = config_from_dict({**cfg.to_dict(), **changes})
    device = data.train_x.device
    trainer = Trainer(run_cfg, build_components(run_cfg, device, bundle=data.bundle))
    if precision is None:
        trainer.step = TrainStep(trainer.network, trainer.optimizer, trainer.loss_spec.module)
    return trainer


def measure(trainer: Trainer, split: str, precision: str | None, batch_size: int = 1024) -> dict:
    """One split measured as the trainer does, at ``precision``'s float32 setting (None:
    PyTorch's flags untouched)."""
    x, y = (trainer.train_x, trainer.train_y) if split == "train" else (
        trainer.test_x, trainer.test_y)  # fmt: skip
    ctx = float32_math(precision, x.device) if precision else contextlib.nullcontext()
    with ctx:
        return measure_split(trainer.network, trainer.loss_spec, x, y,
                             num_classes=trainer.num_classes, batch_size=batch_size)  # fmt: skip


def epoch_batches(trainer: Trainer, epoch: int) -> Any:
    """The batches of ``epoch`` in the run's order, the model in train mode (for steps taken one
    by one: warm-ups and the determinism checks; timed epochs run :func:`lockstep_epoch`)."""
    trainer.step.model.train()
    trainer.train_loader.set_epoch(epoch)
    return iter(trainer.train_loader)


def warm_up(trainers: list[Trainer], steps: int, streams: list[Any] | None = None) -> None:
    """Untimed: batches ``0..steps-1`` and the last (partial) one of epoch 0 of each run, on
    its stream (graph capture, cuDNN autotuning of both batch shapes)."""
    streams = streams or [None] * len(trainers)
    for t, stream in zip(trainers, streams):
        n = len(t.train_loader)
        with _on(stream):
            for i, (x, y) in enumerate(epoch_batches(t, 0)):
                if i < steps or i == n - 1:
                    t.step(x, y)
        if stream is not None:
            torch.cuda.current_stream(stream.device).wait_stream(stream)


def captures(trainer: Trainer) -> int:
    """CUDA graphs the run's step captured (0 for the eager reference step)."""
    return int((trainer.step.describe() or {}).get("graph_captures", 0))


@torch.no_grad()
def default_flags() -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        }


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------

VARIANTS = {
    # name: (engine?, precision, channels_last, graph)
    "today": (False, None, False, False),
    "fp32-eager": (True, "fp32", False, False),
    "fp32-graph": (True, "fp32", False, True),
    "tf32-graph": (True, "tf32", False, True),
    "tf32-graph-cl": (True, "tf32", True, True),
    "bf16-graph": (True, "bf16", False, True),
    "bf16-graph-cl": (True, "bf16", True, True),
}


#: sections of the benchmark, in the order they run (``--sections`` / ``--skip``)
SECTIONS = (
    "train",
    "e2e",
    "measure",
    "packed",
    "determinism",
    "fidelity",
    "cifar",
    "packed-cifar",
    "vmap",
    "compile",
    "compile-graph",
)


def n_measurements(epochs: int) -> int:
    return len(measurement_epochs(epochs, 50))


def section_train(rec: Recorder, args, preset: str, data: Data, variants: list[str]) -> None:
    cfg = preset_config(preset)
    device = data.train_x.device
    for name in variants:
        rec.check(20 if not args.smoke else 1, f"{preset} {name}")
        use_engine, precision, cl, graph = VARIANTS[name]
        torch.backends.cudnn.benchmark = use_engine  # today: PyTorch's default (off)
        run = bench_trainer(cfg, data, seed=0, precision=precision, channels_last=cl,
                            graph=graph, batch_size=args.batch_size)  # fmt: skip
        steps = len(run.train_loader)
        t0 = time.perf_counter()
        # the partial last batch too: cuDNN tunes its shape once per run
        warm_up([run], args.warmup_steps)
        sync(device)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        (totals,) = lockstep_epoch([run], [1])
        loss, acc = totals.objective, totals.accuracy
        sync(device)
        t_epoch = time.perf_counter() - t0
        # one measurement of train + test split (warm once: cuDNN picks algorithms)
        measure(run, "train", precision)  # warm-up: cuDNN autotunes each batch shape once
        measure(run, "test", precision)
        sync(device)
        t0 = time.perf_counter()
        row = measure(run, "train", precision)
        measure(run, "test", precision)
        sync(device)
        t_meas = time.perf_counter() - t0
        nm = n_measurements(PROTOCOL_EPOCHS)
        run_s = PROTOCOL_EPOCHS * t_epoch + nm * t_meas
        rec.add(
            section="train", preset=preset, data=data.source, variant=name,
            precision=precision or "default", channels_last=cl, cuda_graph=graph,
            steps_per_epoch=steps, warmup_steps=args.warmup_steps, warmup_s=t_warm,
            epoch_s=t_epoch, ms_per_step=1e3 * t_epoch / steps, measure_train_test_s=t_meas,
            amortised_epoch_s=run_s / PROTOCOL_EPOCHS, run_350_s=run_s,
            captures=captures(run), epoch_loss=loss, epoch_acc=acc,
            measured_nc1=row["nc1"],
        )  # fmt: skip
        del run
        torch.backends.cudnn.benchmark = False


def section_measure(rec: Recorder, args, device) -> None:
    sizes = [(50_000, 512, 10), (200_000, 2048, 100)]
    if args.smoke:
        sizes = [(3000, 32, 4), (6000, 64, 10)]
    for n, p, C in sizes:
        rec.check(10 if not args.smoke else 1, f"measure {n}/{p}/{C}")
        _measure_one(rec, args, device, n, p, C)


def _median_time(fn: Callable[[], Any], repeats: int, device) -> float:
    fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def _measure_one(rec: Recorder, args, device, n: int, p: int, C: int) -> None:
    """Features on the device, batches of 1024: ncmse vs one float64 pass of HᵀH."""
    g = torch.Generator(device=device).manual_seed(0)
    means = torch.randn(C, p, generator=g, device=device)
    y = torch.arange(n, device=device) % C
    H = means[y] + 0.3 * torch.randn(n, p, generator=g, device=device)
    W = 0.1 * torch.randn(C, p, generator=g, device=device)
    b = torch.zeros(C, device=device)
    batches = [(H[i : i + 1024], y[i : i + 1024]) for i in range(0, n, 1024)]

    def floor() -> None:
        S = torch.zeros(p, p, dtype=torch.float64, device=device)
        for h, _ in batches:
            h64 = h.double()
            S.addmm_(h64.T, h64)
        S.sum().item()

    times = {
        "floor": _median_time(floor, args.repeats, device),
        "measure_stream": _median_time(
            lambda: ncmse.measure_stream(batches, W, b, num_classes=C, lam=1e-3),
            args.repeats,
            device,
        ),
        "measure_features": _median_time(
            lambda: ncmse.measure_features(H, y, W, b, num_classes=C, lam=1e-3),
            args.repeats,
            device,
        ),
    }
    rec.add(
        section="measure", N=n, p=p, C=C, batch=1024, device=str(device),
        floor_ms=1e3 * times["floor"], stream_ms=1e3 * times["measure_stream"],
        features_ms=1e3 * times["measure_features"],
        stream_over_floor=times["measure_stream"] / times["floor"],
        features_over_floor=times["measure_features"] / times["floor"],
    )  # fmt: skip


def section_packed(rec: Recorder, args, preset: str, data: Data, ks: list[int],
                   precision: str, cl: bool) -> None:  # fmt: skip
    cfg = preset_config(preset)
    device = data.train_x.device
    torch.backends.cudnn.benchmark = True
    lrs = [cfg.lr * f for f in (1.0, 0.5, 0.25, 0.75)]
    for k in ks:
        rec.check(15 + 1.5 * k if not args.smoke else 1, f"packed K={k}")
        runs = [bench_trainer(cfg, data, seed=i, lr=lrs[i % len(lrs)], precision=precision,
                              channels_last=cl, graph=True, batch_size=args.batch_size)
                for i in range(k)]  # fmt: skip
        streams = [_new_stream(device) for _ in runs]
        t0 = time.perf_counter()
        warm_up(runs, args.warmup_steps, streams)
        sync(device)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        totals = lockstep_epoch(runs, [1] * k, streams)
        sync(device)
        t_epoch = time.perf_counter() - t0
        losses = [t.objective for t in totals]
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rec.add(
            section="packed", preset=preset, data=data.source, K=k, precision=precision,
            channels_last=cl, method="per-run CUDA graph on its own stream", warmup_s=t_warm,
            epoch_s_all=t_epoch, epoch_s_per_run=t_epoch / k,
            ms_per_step_per_run=1e3 * t_epoch / k / len(runs[0].train_loader),
            epoch_losses=losses, max_memory_gib=mem,
        )  # fmt: skip
        del runs
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)


def section_fidelity(rec: Recorder, args, data: Data) -> None:
    epochs = args.fidelity_epochs
    cfg = preset_config(FASHION, f"epochs={epochs}")
    device = data.train_x.device
    torch.backends.cudnn.benchmark = True
    specs = [
        (v.removesuffix("-cl"), v.endswith("-cl"), seed)
        for v in args.fidelity_variants
        for seed in (0, 1)
    ]
    runs = [bench_trainer(cfg, data, seed=seed, precision=prec, channels_last=cl, graph=True,
                          batch_size=args.batch_size) for prec, cl, seed in specs]  # fmt: skip
    streams = [_new_stream(device) for _ in runs]
    t0 = time.perf_counter()
    history: list[list[float]] = [[] for _ in runs]
    done = 0
    for epoch in range(1, epochs + 1):
        if rec.left() < 25:  # keep what was trained: measure it below
            break
        totals: list[EpochTotals] = lockstep_epoch(runs, [epoch] * len(runs), streams)
        done = epoch
        for r, t, h in zip(runs, totals, history):
            r.scheduler.step()
            h.append(t.objective)
    sync(device)
    t_train = time.perf_counter() - t0
    for (prec, cl, seed), r, h in zip(specs, runs, history):
        row = measure(r, "train", prec)
        test = measure(r, "test", prec)
        rec.add(
            section="fidelity", preset=FASHION, data=data.source, epochs=epochs, epochs_done=done,
            precision=prec, channels_last=cl, seed=seed, train_accuracy=row["accuracy"],
            test_accuracy=test["accuracy"], nc1=row["nc1"],
            loss_perp_ratio=row["loss_perp_ratio"], loss=row["loss"],
            epoch_train_losses=h, pack_train_s=t_train,
        )  # fmt: skip


def section_e2e(rec: Recorder, args, epochs: int, overrides: list[str]) -> None:
    """``ncmse train`` itself (run directory, measurements every epoch, checkpoints), killed
    after epoch ``epochs // 2`` in a subprocess and resumed here, then a fresh uninterrupted
    run."""
    import subprocess

    from ncmse.train.run import resume, train

    common = [f"epochs={epochs}", f"data_dir={args.data_dir}", "download=false", "quiet=true",
              "report=false", "tensorboard=false", *SMOKE_OVERRIDES, *overrides]  # fmt: skip
    if args.smoke:
        common = [c for c in common if not c.startswith(("data_dir", "download"))]
        common = [*common, "dataset=digits", "model=mlp", "model_kwargs={}"]
    root = rec.out / "e2e"
    crashed = root / "crashed"
    kill = Path(__file__).resolve().parents[1] / "tests" / "kill_after.py"  # exit 3 after epoch
    argv = [sys.executable, str(kill), str(max(1, epochs // 2)), "ncmse", "train", "--config",
            FASHION, "--out", str(crashed), "--overwrite"]  # fmt: skip
    for item in common:
        argv += ["--set", item]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    t_crash = time.perf_counter() - t0
    t0 = time.perf_counter()
    resumed = resume(crashed)
    t_resume = time.perf_counter() - t0
    t0 = time.perf_counter()
    fresh = train(preset_config(FASHION, *common), root / "fresh", overwrite=True)
    t_fresh = time.perf_counter() - t0
    rows = [
        json.loads(line) for line in (root / "fresh" / "metrics.jsonl").read_text().splitlines()
    ]
    walls = [r["wall_time"] for r in rows]
    per_epoch = (walls[-1] - walls[0]) / max(len(walls) - 1, 1)
    keys = ("accuracy", "nc1", "loss_perp_ratio", "test_accuracy")
    rec.add(
        section="e2e", epochs=epochs, overrides=overrides, crash_rc=proc.returncode,
        crash_stderr_tail=proc.stderr[-600:], crash_s=t_crash, resume_s=t_resume,
        resumed_status=resumed.get("status"), fresh_status=fresh.get("status"),
        fresh_s=t_fresh, fresh_wall_per_epoch_incl_measure_s=per_epoch,
        engine=fresh.get("engine"),
        resumed_final={k: (resumed.get("final") or {}).get(k) for k in keys},
        fresh_final={k: (fresh.get("final") or {}).get(k) for k in keys},
    )  # fmt: skip


def _state_vector(model: nn.Module) -> torch.Tensor:
    """Every floating parameter and buffer, flattened, in float64."""
    return torch.cat(
        [
            t.detach().flatten().double()
            for t in model.state_dict().values()
            if t.is_floating_point()
        ]
    )


def _compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    d = (a - b).abs()
    return {
        "bitwise_equal": bool(torch.equal(a, b)),
        "max_abs_diff": float(d.max()),
        "rel_l2_diff": float(d.norm() / a.norm().clamp_min(1e-300)),
    }


class _Deterministic:
    """cuDNN/cuBLAS deterministic algorithms, no autotuning (restored on exit)."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = self.saved
        torch.use_deterministic_algorithms(False)


def section_determinism(rec: Recorder, args, data: Data) -> None:
    """With deterministic algorithms: eager vs eager (the floor), eager vs graphed, after each
    of the first steps (steps 1-3 are the eager warm-up of the graphed run, step 4 its first
    replay); then packed (2 runs, own streams) vs the same runs alone.

    Without deterministic algorithms this comparison is meaningless on this preset: its
    training is chaotic from the first steps (a 1e-6 relative perturbation of the initial
    weights gives O(1) relative differences in BatchNorm parameters after 3-6 steps on the CPU,
    where every step is deterministic)."""
    cfg = preset_config(FASHION)
    device = data.train_x.device
    n = 10 if not args.smoke else 5
    variants = [("fp32", False), (args.fast_precision, args.fast_channels_last)]
    with _Deterministic():
        for precision, cl in variants:
            runs = [
                bench_trainer(cfg, data, seed=0, precision=precision, channels_last=cl, graph=g,
                              batch_size=args.batch_size)
                for g in (False, False, True)
            ]  # fmt: skip
            batches = [epoch_batches(r, 0) for r in runs]
            steps = []
            for i in range(n):
                for r, it in zip(runs, batches):
                    r.step(*next(it))
                sync(device)
                v = [_state_vector(r.network) for r in runs]
                steps.append(
                    {"step": i + 1, "eager_vs_eager": _compare(v[0], v[1]),
                     "eager_vs_graph": _compare(v[0], v[2])}
                )  # fmt: skip
            rec.add(
                section="determinism", what="eager vs eager vs graphed, same init and batches",
                precision=precision, channels_last=cl, graph_captures=captures(runs[2]),
                warmup_steps=runs[2].step.warmup_steps, steps=steps,
            )  # fmt: skip
            del runs
        # packed vs alone
        m = 12 if not args.smoke else 4
        prec, cl = args.fast_precision, args.fast_channels_last
        alone, packed = ([bench_trainer(cfg, data, seed=s, precision=prec, channels_last=cl,
                                        graph=True, batch_size=args.batch_size) for s in (0, 1)]
                         for _ in range(2))  # fmt: skip
        for r in alone:
            it = epoch_batches(r, 0)
            for _ in range(m):
                r.step(*next(it))
        streams = [_new_stream(device) for _ in packed]
        batches = [epoch_batches(r, 0) for r in packed]
        for _ in range(m):
            for r, it, stream in zip(packed, batches, streams):
                with _on(stream):
                    r.step(*next(it))
        for stream in streams:
            if stream is not None:
                torch.cuda.current_stream(device).wait_stream(stream)
        sync(device)
        cmp = [_compare(_state_vector(a.network), _state_vector(b.network))
               for a, b in zip(alone, packed)]  # fmt: skip
        rec.add(section="determinism", what="packed (2 runs) vs alone", precision=prec,
                channels_last=cl, steps=m, per_run=cmp, pack_size=len(packed))  # fmt: skip


def out_features_ok(model: nn.Module, num_classes: int) -> bool:
    from ncmse.train.models import classifier_of

    return classifier_of(model).out_features == num_classes


class VmapPack:
    """Candidate packing: K models as one ``torch.func`` computation (benchmark only)."""

    def __init__(self, runs: list[Trainer]) -> None:
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        self.runs = runs
        models = [r.network for r in runs]
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        num_classes = runs[0].num_classes

        def crit(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # nn.MSELoss on one-hot targets (the presets' loss); one_hot itself is not vmap-able
            target = torch.zeros_like(out).scatter(1, y[:, None], 1.0)
            return ((out - target) ** 2).mean()

        assert runs[0].cfg.loss == "mse" and runs[0].cfg.mse_reduction == "mean"
        assert out_features_ok(models[0], num_classes)
        k = len(runs)
        dev = runs[0].device
        shape = lambda p: (k,) + (1,) * (p.dim() - 1)  # noqa: E731
        self.lr = {n: torch.tensor([r.optimizer.param_groups[0]["lr"] for r in runs], device=dev)
                   .view(shape(p)) for n, p in self.params.items()}  # fmt: skip
        self.wd = runs[0].optimizer.param_groups[0]["weight_decay"]
        self.mom = runs[0].optimizer.param_groups[0]["momentum"]
        self.buf = {n: torch.zeros_like(p) for n, p in self.params.items()}
        base = self.base

        def loss_fn(p, b, x, y):
            out = functional_call(base, (p, b), (x,))
            return crit(out, y), out

        self.fn = vmap(grad_and_value(loss_fn, has_aux=True))
        self.x = runs[0].train_x
        self.y = runs[0].train_y
        self.idx = torch.zeros(k, runs[0].train_loader.batch_size, dtype=torch.long, device=dev)

    def step(self) -> None:
        x = self.x[self.idx]
        y = self.y[self.idx]
        grads, _ = self.fn(self.params, self.buffers, x, y)
        with torch.no_grad():
            for n, p in self.params.items():
                g = grads[n].add(p, alpha=self.wd)
                self.buf[n].mul_(self.mom).add_(g)
                p.sub_(self.lr[n] * self.buf[n])


def section_vmap(rec: Recorder, args, data: Data, k: int, precision: str) -> None:
    cfg = preset_config(FASHION)
    device = data.train_x.device
    torch.backends.cudnn.benchmark = True
    runs = [bench_trainer(cfg, data, seed=i, graph=False, precision=precision,
                          batch_size=args.batch_size) for i in range(k)]  # fmt: skip
    pack = VmapPack(runs)
    orders = [r.train_loader.order(0).to(device) for r in runs]
    bsz = runs[0].train_loader.batch_size
    n = min(args.timed_steps, len(runs[0].train_loader) - 1)

    def set_batch(i: int) -> None:
        pack.idx.copy_(torch.stack([o[i * bsz : (i + 1) * bsz] for o in orders]))

    with float32_math(precision, device):
        for i in range(3):
            set_batch(i)
            pack.step()
        sync(device)
        t0 = time.perf_counter()
        for i in range(n):
            set_batch(i)
            pack.step()
        sync(device)
        t_eager = (time.perf_counter() - t0) / n
        t_graph = None
        note = ""
        if device.type == "cuda":
            try:
                s = torch.cuda.Stream(device)
                s.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(s):
                    for _ in range(3):
                        pack.step()
                torch.cuda.current_stream(device).wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    pack.step()
                sync(device)
                t0 = time.perf_counter()
                for i in range(n):
                    set_batch(i)
                    graph.replay()
                sync(device)
                t_graph = (time.perf_counter() - t0) / n
            except Exception as exc:  # noqa: BLE001
                note = f"graph capture failed: {type(exc).__name__}: {exc}"[:300]
    steps = len(runs[0].train_loader)
    rec.add(section="vmap", K=k, precision=precision, timed_steps=n,
            ms_per_step_per_run_eager=1e3 * t_eager / k,
            ms_per_step_per_run_graph=None if t_graph is None else 1e3 * t_graph / k,
            epoch_s_per_run_eager=t_eager * steps / k,
            epoch_s_per_run_graph=None if t_graph is None else t_graph * steps / k,
            note=note)  # fmt: skip


def section_compile(rec: Recorder, args, data: Data, mode: str) -> None:
    """``torch.compile`` candidates, bf16/channels_last as the fast path:

    * ``reduce-overhead``: compiled model (fwd+bwd in cudagraph trees), optimizer step eager;
    * ``default+graph``: compiled model (inductor fusion, default mode) inside the engine's own
      whole-step CUDA graph (fwd, bwd, optimizer captured together)."""
    cfg = preset_config(FASHION)
    device = data.train_x.device
    torch.backends.cudnn.benchmark = True
    prec, cl = args.fast_precision, args.fast_channels_last
    graph = mode == "default+graph"
    run = bench_trainer(cfg, data, seed=0, precision=prec, channels_last=cl, graph=graph,
                        batch_size=args.batch_size)  # fmt: skip
    # on the current stream: cudagraph trees (reduce-overhead) manage their own capture stream
    if graph:
        run.step.model = torch.compile(run.network)
    else:
        run.step.model = torch.compile(run.network, mode="reduce-overhead")
    t0 = time.perf_counter()
    warm_up([run], 10)
    sync(device)
    t_compile = time.perf_counter() - t0
    rec.check(10, f"compile {mode} timing")
    t0 = time.perf_counter()
    (totals,) = lockstep_epoch([run], [1])
    loss, acc = totals.objective, totals.accuracy
    sync(device)
    t_epoch = time.perf_counter() - t0
    engine = run.step.describe() or {}
    rec.add(section="compile", mode=mode, precision=prec, channels_last=cl,
            first_steps_incl_compile_s=t_compile, epoch_s=t_epoch,
            ms_per_step=1e3 * t_epoch / len(run.train_loader), captures=captures(run),
            capture_error=engine.get("graph_capture_error"), epoch_loss=loss,
            epoch_acc=acc)  # fmt: skip


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


#: fidelity metrics: (record key, compared on a log scale?)
FIDELITY_METRICS = (("train_accuracy", False), ("nc1", True), ("loss_perp_ratio", True))


def fidelity_verdicts(records: list[dict[str, Any]], reference: str = "fp32") -> list[str]:
    """Whether each fast variant stays within the seed-to-seed spread of the reference.

    For every variant other than ``reference`` and each metric of :data:`FIDELITY_METRICS`:
    within ⇔ |mean over the variant's seeds − mean over the reference's seeds| ≤ the reference's
    seed-to-seed spread (max − min over its seeds); nc1 and L⊥/L, which vary over orders of
    magnitude, are compared as log10. Needs ≥ 2 reference seeds.
    """
    rows = [r for r in records if r.get("section") == "fidelity"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        name = r["precision"] + ("+cl" if r["channels_last"] else "")
        by_variant.setdefault(name, []).append(r)
    ref = by_variant.get(reference, [])
    if len(ref) < 2:
        return [f"fidelity: no verdict ({len(ref)} {reference} seed(s); 2 needed for a spread)"]
    lines = []
    for name, runs in by_variant.items():
        if name == reference:
            continue
        parts, held = [], True
        for key, log in FIDELITY_METRICS:

            def value(r: dict[str, Any], key: str = key, log: bool = log) -> float:
                v = float(r[key])
                return math.log10(v) if log else v

            ref_values = [value(r) for r in ref]
            mean_ref = sum(ref_values) / len(ref_values)
            mean_fast = sum(value(r) for r in runs) / len(runs)
            spread = max(ref_values) - min(ref_values)
            ok = abs(mean_fast - mean_ref) <= spread  # False when any value is NaN
            held &= ok
            unit = "log10 " if log else ""
            parts.append(f"{unit}{key} {mean_fast:.3g} vs {mean_ref:.3g} ± {spread:.2g} "
                         f"{'within' if ok else 'OUTSIDE'}")  # fmt: skip
        epochs = sorted({r["epochs_done"] for r in runs + ref})
        lines.append(f"fidelity {name} vs {reference} ({len(runs)} vs {len(ref)} seeds, epochs "
                     f"{epochs}): {'within' if held else 'NOT within'} the seed spread: "
                     + "; ".join(parts))  # fmt: skip
    return lines


def summarise(rec: Recorder) -> None:
    recs = rec.records
    train = [r for r in recs if r.get("section") == "train" and "epoch_s" in r]
    lines = ["", "== summary (measured in this call; '350 ep min' and GPU-hours are projected "
             "from the timed epochs) =="]  # fmt: skip
    for preset in dict.fromkeys(r["preset"] for r in train):
        rows = [r for r in train if r["preset"] == preset]
        base = next((r for r in rows if r["variant"] == "today"), None)
        lines.append(f"{preset}:")
        lines.append(f"  {'variant':<15}{'ms/step':>9}{'s/epoch':>9}{'meas s':>8}"
                     f"{'amort s/ep':>11}{'350 ep min':>11}{'speed-up':>9}")  # fmt: skip
        for r in rows:
            up = base["amortised_epoch_s"] / r["amortised_epoch_s"] if base else float("nan")
            lines.append(f"  {r['variant']:<15}{r['ms_per_step']:>9.2f}{r['epoch_s']:>9.2f}"
                         f"{r['measure_train_test_s']:>8.2f}{r['amortised_epoch_s']:>11.2f}"
                         f"{r['run_350_s'] / 60:>11.1f}{up:>8.1f}x")  # fmt: skip
    packed = [r for r in recs if r.get("section") == "packed" and "epoch_s_per_run" in r]
    for r in packed:
        base = next((t for t in train if t["preset"] == r["preset"] and t["variant"] == "today"),
                    None)  # fmt: skip
        meas = next((t["measure_train_test_s"] for t in train if t["preset"] == r["preset"]
                     and t["precision"] == r["precision"]
                     and t["channels_last"] == r["channels_last"]), None)  # fmt: skip
        head = (f"packed {r['preset']} K={r['K']:<3} {r['precision']}"
                f"{'+cl' if r['channels_last'] else ''}: {r['epoch_s_per_run']:.3f} s/epoch "
                "per run train-only")  # fmt: skip
        if meas is None:  # no measurement timed in this call for this engine: no amortised figure
            lines.append(head + ", amortised n/a (no matching train variant timed)")
            continue
        amort = r["epoch_s_per_run"] + meas * n_measurements(PROTOCOL_EPOCHS) / PROTOCOL_EPOCHS
        r["amortised_epoch_s_per_run"] = amort
        up = base["amortised_epoch_s"] / amort if base else float("nan")
        lines.append(head + f", {amort:.3f} amortised with measurements, {up:.1f}x today")
    for r in recs:
        if r.get("section") == "measure":
            lines.append(
                f"measure N={r['N']} p={r['p']} C={r['C']}: floor {r['floor_ms']:.1f} ms, "
                f"stream {r['stream_ms']:.1f} ms ({r['stream_over_floor']:.2f}x), "
                f"features {r['features_ms']:.1f} ms ({r['features_over_floor']:.2f}x)"
            )
        if r.get("section") == "fidelity":
            lines.append(f"fidelity {r['precision']}{'+cl' if r['channels_last'] else ''} "
                         f"seed {r['seed']}: train acc {r['train_accuracy']:.4f} test acc "
                         f"{r['test_accuracy']:.4f} nc1 {r['nc1']:.4g} "
                         f"L_perp/L {r['loss_perp_ratio']:.3g}")  # fmt: skip
        if r.get("section") in ("vmap", "compile", "determinism", "e2e") and "error" not in r:
            lines.append(f"{r['section']}: " + json.dumps(_json_safe(
                {k: v for k, v in r.items() if k not in ("section", "t")})))  # fmt: skip
        if "error" in r or "skipped" in r or "stopped" in r:
            lines.append(f"{r.get('section')}: " + str(r.get("error") or r.get("skipped")
                                                      or r.get("stopped")))  # fmt: skip
    if any(r.get("section") == "fidelity" for r in recs):
        lines += fidelity_verdicts(recs)
    best = [r["run_350_s"] for r in train if r["preset"] == FASHION]
    base = next((r for r in train if r["preset"] == FASHION and r["variant"] == "today"), None)
    if base:
        hours = PROTOCOL_RUNS * base["run_350_s"] / 3600
        lines.append(f"protocol ({PROTOCOL_RUNS} runs x {PROTOCOL_EPOCHS} epochs, at the "
                     f"fashion-resnet18 cost): today {hours:.0f} GPU-hours")  # fmt: skip
        fast = min(best)
        lines.append(f"  fast single path: {PROTOCOL_RUNS * fast / 3600:.0f} GPU-hours")
        pk = [r for r in packed if r["preset"] == FASHION and "amortised_epoch_s_per_run" in r]
        if pk:
            a = min(r["amortised_epoch_s_per_run"] for r in pk)
            lines.append(f"  packed (best K): {PROTOCOL_RUNS * a * PROTOCOL_EPOCHS / 3600:.0f} "
                         "GPU-hours")  # fmt: skip
    lines.append(f"total {rec.elapsed():.0f} s")
    text = "\n".join(lines)
    print(text, flush=True)
    (rec.out / "bench_gpu_summary.txt").write_text(text + "\n")
    rec.add(section="summary", text=text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="directory with Fashion-MNIST's IDX files (else synthetic)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"), help="output directory")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop sections after this")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU version (< 2 minutes)")
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--timed-steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--fidelity-epochs", type=int, default=8)
    ap.add_argument("--fast-precision", default="bf16", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--fast-channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--fidelity-variants",
        nargs="+",
        default=["fp32", "bf16-cl"],
        help="precisions of the fidelity runs (2 seeds each): fp32, tf32, bf16, with -cl for "
        "channels_last",
    )
    ap.add_argument("--sections", nargs="+", help=f"run only these, in order, of {SECTIONS}")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip")
    args = ap.parse_args(argv)

    # deterministic cuBLAS for the determinism section must be configured before cuBLAS starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    rec = Recorder(Path(args.out), args.budget_s)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "host": platform.node(),
        "default_flags": default_flags(),
        "args": vars(args),
    }
    rec.add(section="env", **env)
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        args.warmup_steps, args.timed_steps, args.repeats = 2, 4, 1
        args.batch_size, args.ks, args.fidelity_epochs = 32, [2], 2
        fashion = synthetic("fashionmnist", 256, 128, (1, 12, 12), device)
        cifar_smoke = synthetic("cifar10", 192, 96, (3, 12, 12), device)
        smoke_model = ["model=cnn", "model_kwargs.width=8"]
    else:
        smoke_model = []
        fashion = (real_fashion(args.data_dir, device) if args.data_dir
                   else synthetic("fashionmnist", 60_000, 10_000, (1, 28, 28), device))  # fmt: skip
        cifar_smoke = None
    SMOKE_OVERRIDES[:] = smoke_model
    variants = list(VARIANTS) if not args.smoke else ["today", "fp32-eager", "tf32-graph"]
    fast = f"{args.fast_precision}-graph" + ("-cl" if args.fast_channels_last else "")
    cifar_variants = ["today", fast] if fast in VARIANTS else ["today", "tf32-graph"]
    only = set(args.sections or SECTIONS) - set(args.skip)
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    fast_overrides = [
        f"precision={args.fast_precision}",
        f"channels_last={str(args.fast_channels_last).lower()}",
    ]
    lazy: dict[str, Data] = {}

    def cifar() -> Data:
        if "cifar" not in lazy:
            lazy["cifar"] = cifar_smoke or synthetic("cifar10", 50_000, 10_000, (3, 32, 32), device)
        return lazy["cifar"]

    plan: list[tuple[str, Callable[[], None], float]] = [
        ("train", lambda: section_train(rec, args, FASHION, fashion, variants), 0),
        ("e2e", lambda: section_e2e(rec, args, 4 if not args.smoke else 2, fast_overrides), 60),
        ("measure", lambda: section_measure(rec, args, device), 0),
        ("packed", lambda: section_packed(rec, args, FASHION, fashion, args.ks,
                                          args.fast_precision, args.fast_channels_last), 0),
        ("determinism", lambda: section_determinism(rec, args, fashion), 20),
        ("fidelity", lambda: section_fidelity(rec, args, fashion), 60),
        ("cifar", lambda: section_train(rec, args, CIFAR, cifar(), cifar_variants), 0),
        ("packed-cifar", lambda: section_packed(rec, args, CIFAR, cifar(), args.ks,
                                                args.fast_precision, args.fast_channels_last), 40),
        ("vmap", lambda: section_vmap(rec, args, fashion, 8 if not args.smoke else 2, "tf32"), 30),
        ("compile", lambda: section_compile(rec, args, fashion, "reduce-overhead"), 70),
        ("compile-graph", lambda: section_compile(rec, args, fashion, "default+graph"), 50),
    ]  # fmt: skip
    for name, fn, min_left in plan:
        if name not in only:
            continue
        if name == "e2e" and not (args.data_dir or args.smoke):
            continue
        if name.startswith("compile") and args.smoke:
            continue
        rec.section(name, fn, min_left=min_left)
        if name == "packed-cifar":
            lazy.clear()
    summarise(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
