"""Training loop of the paper's protocol, with collapse measurements along the way.

SGD (momentum, weight decay), learning rate ×γ at fixed fractions of the epochs, measurements of
every SPEC §2/§3 quantity at log-spaced epochs (train split, test split on request), a run
directory with the resolved config, ``metrics.csv``/``metrics.jsonl``, ``summary.json``,
optional TensorBoard events and an atomic checkpoint for exact resume. Runs under
``torchrun`` with DistributedDataParallel: each rank trains and measures on its shard of every
global batch, statistics are reduced across ranks by :func:`ncmse.measure`, rank 0 writes files.

Layout of the run directory: ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import random
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ncmse.config import Config, config_from_dict, save_config
from ncmse.errors import ConfigError, DivergenceError, InputError
from ncmse.fileio import atomic_torch_save, atomic_write_text
from ncmse.losses import LossSpec, build_loss
from ncmse.result import FLAGS, flatten_row

__all__ = [
    "Components",
    "DistInfo",
    "Trainer",
    "build_components",
    "measurement_epochs",
    "lr_milestones",
    "flatten_row",
    "load_checkpoint",
    "train",
    "resume",
    "CRASH_ENV",
]

#: test hook: ``os._exit(3)`` right after the checkpoint of this epoch (simulates a kill)
CRASH_ENV = "NCMSE_CRASH_AFTER_EPOCH"
#: steps between progress-bar updates (each costs one device sync)
BAR_EVERY = 10
#: entries of a run directory that ``--overwrite`` removes
RUN_ENTRIES = (
    "config.yaml",
    "metrics.csv",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
    "tb",
    "report.html",
    "figures",
)


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def measurement_epochs(
    epochs: int, points: int = 50, explicit: list[int] | None = None
) -> list[int]:
    """Log-spaced measurement epochs in [1, epochs], always including 1 and ``epochs``.

    Parameters
    ----------
    epochs : int
        Length of the run.
    points : int
        Target number of distinct epochs (fewer when ``epochs < points``: then every epoch).
    explicit : list of int, optional
        Use these epochs instead (sorted, deduplicated; 0 means "before training").

    Returns
    -------
    list of int
        Sorted distinct epochs.
    """
    if explicit is not None:
        return sorted({int(e) for e in explicit if 0 <= int(e) <= epochs})
    if epochs <= points:
        return list(range(1, epochs + 1))
    raw = points
    chosen: list[int] = []
    while raw <= 20 * points:
        grid = np.unique(np.rint(np.logspace(0.0, math.log10(epochs), raw)).astype(int))
        chosen = sorted({1, epochs, *grid.tolist()})
        if len(chosen) >= points:
            break
        raw += 1
    return chosen


def lr_milestones(epochs: int, fractions: list[float]) -> list[int]:
    """Epoch indices (scheduler steps) at which the learning rate is multiplied by ``lr_gamma``."""
    return sorted({max(1, int(round(f * epochs))) for f in fractions})


# --------------------------------------------------------------------------------------------
# devices, distributed, RNG, files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Process-group facts of this process (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files."""
        return self.rank == 0


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available; use --set device=cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(cfg: Config) -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's env vars when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(cfg.device, local_rank)
    backend = cfg.dist_backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def _broadcast(obj: Any, dist_info: DistInfo) -> Any:
    if dist_info.world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def _process_group(dist_info: DistInfo) -> Iterator[None]:
    """Destroy the process group that :func:`init_distributed` created, on the way out."""
    try:
        yield
    finally:
        if dist_info.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def capture_rng() -> dict[str, Any]:
    """Every RNG state a training step may consume (torch, CUDA, NumPy, Python)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global state is what code uses)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` (on the CPU).

    Raises
    ------
    InputError
        If the file is missing or is not an ncmse checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise InputError(
            f"checkpoint {str(path)!r} does not exist; pass RUN_DIR/checkpoints/last.pt or RUN_DIR"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise InputError(f"{str(path)!r} is not an ncmse training checkpoint (no model/config)")
    return ckpt


def environment(device: torch.device, dist_info: DistInfo) -> dict[str, Any]:
    """Software and hardware facts recorded in ``summary.json``."""
    from ncmse import __version__

    env = {
        "ncmse": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "world_size": dist_info.world_size,
        "num_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# --------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------


def _rows_to_csv(rows: list[dict[str, Any]]) -> str:
    flat = [flatten_row(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in flat:
        writer.writerow({k: _csv_value(r.get(k)) for k in columns})
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------------------------


@dataclass
class Components:
    """Data, model and loss of a config (what ``ncmse measure`` rebuilds from a checkpoint)."""

    bundle: Any
    model: nn.Module
    loss: LossSpec
    device: torch.device


def build_components(cfg: Config, device: torch.device) -> Components:
    """Load the dataset, build the model (seeded by ``cfg.seed``) and the loss.

    Raises
    ------
    DataUnavailableError
        From :func:`ncmse.data.load_dataset` when the dataset is not available offline.
    """
    from ncmse.data import load_dataset
    from ncmse.models import build_model

    bundle = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        per_class=cfg.per_class,
        test_per_class=cfg.test_per_class,
        seed=cfg.seed,
    )
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model,
        num_classes=bundle.num_classes,
        in_channels=bundle.in_channels,
        image_size=bundle.image_size,
        **cfg.model_kwargs,
    ).to(device)
    loss = build_loss(
        cfg.loss,
        num_classes=bundle.num_classes,
        weight_decay=cfg.weight_decay,
        reduction=cfg.mse_reduction,
        rescale_k=cfg.rescale_k,
        rescale_m=cfg.rescale_m,
        lam=cfg.lam,
    )
    return Components(bundle, model, loss, device)


@contextlib.contextmanager
def scaled_classifier(layer: nn.Linear, scale: float) -> Iterator[None]:
    """Temporarily multiply a linear layer's weight and bias by ``scale`` (restored exactly)."""
    if scale == 1.0:
        yield
        return
    saved = [p.detach().clone() for p in layer.parameters()]
    try:
        with torch.no_grad():
            for p in layer.parameters():
                p.mul_(scale)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(layer.parameters(), saved):
                p.copy_(s)


def measure_split(
    model: nn.Module,
    loss: LossSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int,
    memory_budget_bytes: int | None = None,
    dist_info: DistInfo | None = None,
) -> dict[str, Any]:
    """All SPEC metrics of one split at the loss's λ (rank-sharded under DDP).

    Parameters
    ----------
    model : nn.Module
        The (unwrapped) network.
    loss : LossSpec
        Supplies λ and the classifier scale (1/M for the rescaled MSE).
    x, y : Tensor
        The whole split (every rank passes the whole split and measures its shard).
    """
    import ncmse
    from ncmse.api import DEFAULT_MEMORY_BUDGET
    from ncmse.data import TensorLoader
    from ncmse.models import classifier_of

    info = dist_info or DistInfo()
    loader = TensorLoader(x, y, batch_size, rank=info.rank, world_size=info.world_size)
    layer = classifier_of(model)
    budget = memory_budget_bytes if memory_budget_bytes is not None else DEFAULT_MEMORY_BUDGET
    # degenerate-feature flags are reported by the trainer (console line, summary.json)
    with scaled_classifier(layer, loss.classifier_scale), warnings.catch_warnings():
        warnings.simplefilter("ignore", ncmse.NCMSEWarning)
        result = ncmse.measure(
            model,
            loader,
            classifier=layer,
            num_classes=num_classes,
            lam=loss.lam,
            memory_budget_bytes=budget,
        )
    return result.to_dict()


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------


def _first_flag_epochs(rows: list[dict[str, Any]]) -> dict[str, int]:
    """``{flag: first epoch}`` of the degenerate-feature flags (test split: ``test_<flag>``)."""
    first: dict[str, int] = {}
    for row in rows:
        for key, prefix in (("flags", ""), ("test_flags", "test_")):
            for flag in filter(None, str(row.get(key) or "").split(";")):
                first.setdefault(prefix + flag, int(row["epoch"]))
    return first


@dataclass
class RunState:
    """What a checkpoint carries besides the modules: progress and the rows written so far."""

    epoch: int = 0
    wall_time: float = 0.0
    tpt_epoch: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


def _bar(total: int, desc: str, disable: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=disable, dynamic_ncols=True)


class Trainer:
    """One training run in one run directory (see module docstring).

    Parameters
    ----------
    cfg : Config
        Resolved configuration.
    run_dir : Path
        Where files go (rank 0 writes them).
    dist_info : DistInfo
        Process group of this process.
    """

    def __init__(self, cfg: Config, run_dir: Path, dist_info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = dist_info or DistInfo()
        self.device = _resolve_device(cfg.device, self.dist.local_rank)
        self._configure_torch()
        comps = build_components(cfg, self.device)
        self.bundle, self.net, self.loss = comps.bundle, comps.model, comps.loss
        self.num_classes = int(self.bundle.num_classes)
        self._move_data()
        self.model = self._wrap(self.net)
        self.optimizer = torch.optim.SGD(
            self.net.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, lr_milestones(cfg.epochs, cfg.lr_milestones), gamma=cfg.lr_gamma
        )
        self.train_loader = self._train_loader()
        self.schedule = set(measurement_epochs(cfg.epochs, cfg.measure_points, cfg.measure_epochs))
        self.state = RunState()
        self._tb: Any = None
        self._last_nc1: float | None = None
        self._t0 = time.perf_counter()

    # ---- set-up ------------------------------------------------------------------------------

    def _configure_torch(self) -> None:
        if self.cfg.num_threads is not None:
            torch.set_num_threads(self.cfg.num_threads)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = False
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def _move_data(self) -> None:
        b = self.bundle
        self.train_x, self.train_y = b.train_x.to(self.device), b.train_y.to(self.device)
        self.test_x, self.test_y = b.test_x.to(self.device), b.test_y.to(self.device)

    def _wrap(self, net: nn.Module) -> nn.Module:
        if self.dist.world_size == 1:
            return net
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids)

    def _train_loader(self) -> Any:
        from ncmse.data import TensorLoader

        world = self.dist.world_size
        if self.cfg.batch_size % world:
            raise ConfigError(
                f"batch_size={self.cfg.batch_size} is not divisible by the {world} processes; "
                f"set --set batch_size to a multiple of {world}"
            )
        return TensorLoader(
            self.train_x,
            self.train_y,
            self.cfg.batch_size // world,
            shuffle=True,
            seed=self.cfg.seed,
            rank=self.dist.rank,
            world_size=world,
        )

    # ---- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        """``RUN_DIR/checkpoints/last.pt``."""
        return self.run_dir / "checkpoints" / "last.pt"

    def save_checkpoint(self) -> None:
        """Atomically write model, optimizer, scheduler, RNG states, progress and config."""
        if not self.dist.is_main:
            return
        atomic_torch_save(
            {
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": capture_rng(),
                "epoch": self.state.epoch,
                "wall_time": self._wall_time(),
                "tpt_epoch": self.state.tpt_epoch,
                "rows": self.state.rows,
                "config": self.cfg.to_dict(),
                "lam": self.loss.lam,
                "lam_source": self.loss.lam_source,
            },
            self.checkpoint_path,
        )

    def load_checkpoint(self) -> bool:
        """Restore from ``checkpoints/last.pt`` if present; returns whether it was."""
        if not self.checkpoint_path.is_file():
            return False
        ckpt = load_checkpoint(self.checkpoint_path)
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt["rng"])
        self.state = RunState(
            int(ckpt["epoch"]), float(ckpt["wall_time"]), ckpt["tpt_epoch"], list(ckpt["rows"])
        )
        if self.state.rows:
            self._last_nc1 = self.state.rows[-1].get("nc1")
        self._t0 = time.perf_counter()
        return True

    def _wall_time(self) -> float:
        return self.state.wall_time + (time.perf_counter() - self._t0)

    # ---- one epoch ---------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the (shuffled) training set; returns (mean training loss, accuracy).

        Raises
        ------
        DivergenceError
            When the loss becomes NaN or Inf.
        """
        model, opt, criterion = self.model, self.optimizer, self.loss.module
        model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        bar = _bar(len(self.train_loader), f"epoch {epoch}/{self.cfg.epochs}", self._bar_off())
        for step, (xb, yb) in enumerate(self.train_loader, start=1):
            out = model(xb)
            loss = criterion(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.detach().argmax(dim=1) == yb).sum()
            seen += len(yb)
            if not bar.disable and (step % BAR_EVERY == 0 or step == len(self.train_loader)):
                self._update_bar(bar, step, loss_sum, correct, seen, epoch)
        bar.close()
        mean_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean_loss):
            raise self._diverged(epoch)
        return mean_loss, float(correct) / max(seen, 1)

    def _update_bar(
        self, bar: Any, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int,
        epoch: int,
    ) -> None:  # fmt: skip
        mean = float(loss_sum) / seen
        if not math.isfinite(mean):
            raise self._diverged(epoch)
        post = {"loss": f"{mean:.4g}", "acc": f"{float(correct) / seen:.4f}"}
        if self._last_nc1 is not None:
            post["nc1"] = f"{self._last_nc1:.3g}"
        bar.set_postfix(post, refresh=False)
        bar.update(step - bar.n)

    def _bar_off(self) -> bool:
        return self.cfg.quiet or not self.dist.is_main or not sys.stderr.isatty()

    def _diverged(self, epoch: int) -> DivergenceError:
        kept = self.state.epoch
        where = (
            f"the last good checkpoint (epoch {kept}) is kept at {self.checkpoint_path}"
            if self.checkpoint_path.is_file()
            else "no checkpoint was written yet"
        )
        lr = self.optimizer.param_groups[0]["lr"]
        msg = (
            f"training loss became NaN/Inf in epoch {epoch} (lr={lr:g}); "
            f"{where}. Lower the learning rate (--set lr=...) and start again"
        )
        self._write_summary("diverged", error=msg)
        return DivergenceError(msg)

    # ---- measurements ------------------------------------------------------------------------

    def measure_row(self, epoch: int, lr: float) -> dict[str, Any]:
        """Measure the train split (and test when configured) into one metrics row."""
        kw = {
            "num_classes": self.num_classes,
            "batch_size": self.cfg.measure_batch_size,
            "memory_budget_bytes": self.cfg.memory_budget_bytes,
            "dist_info": self.dist,
        }
        train = measure_split(self.net, self.loss, self.train_x, self.train_y, **kw)
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "wall_time": self._wall_time(),
            "train_error": 1.0 - train["accuracy"],
        }
        row.update(train)
        if self.cfg.measure_test:
            test = measure_split(self.net, self.loss, self.test_x, self.test_y, **kw)
            row.update({f"test_{k}": v for k, v in test.items()})
        return row

    def record(self, row: dict[str, Any]) -> None:
        """Append a row: TPT bookkeeping, files, TensorBoard, console line."""
        self.state.rows.append(row)
        self._last_nc1 = row["nc1"]
        if self.state.tpt_epoch is None and row["train_error"] == 0.0 and row["epoch"] > 0:
            self.state.tpt_epoch = int(row["epoch"])
        if not self.dist.is_main:
            return
        self._write_metrics()
        self._write_summary("running")
        self._tensorboard(row)
        if not self.cfg.quiet:
            self._log(row)
        for key in ("flags", "test_flags"):
            if row.get(key):  # always shown: the numbers of this row need care
                split = "test" if key == "test_flags" else "train"
                print(
                    f"warning: epoch {row['epoch']}: {split} features degenerate ({row[key]}): "
                    + "; ".join(FLAGS[f] for f in row[key].split(";") if f in FLAGS),
                    file=sys.stderr,
                )

    def _log(self, row: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        test = f" test_acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
        tqdm.write(
            f"epoch {row['epoch']:>4} lr {row['lr']:.3g} train_err {row['train_error']:.4f}"
            f"{test} loss {row['loss']:.4g} nc1 {row['nc1']:.4g} "
            f"L_perp/L {row['loss_perp_ratio']:.3g} ({row['wall_time']:.1f}s)",
            file=sys.stderr,
        )

    def _write_metrics(self) -> None:
        rows = self.state.rows
        atomic_write_text(self.run_dir / "metrics.csv", _rows_to_csv(rows))
        lines = [json.dumps(_json_safe(r), allow_nan=False) for r in rows]
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(line + "\n" for line in lines))

    def _write_summary(self, status: str, error: str | None = None) -> None:
        if not self.dist.is_main:
            return
        summary = {
            "kind": "train",
            "status": status,
            "tpt_epoch": self.state.tpt_epoch,
            # PNAS's looser criterion: first measured epoch with training accuracy ≥ 99.9 %
            "tpt_epoch_999": next(
                (int(r["epoch"]) for r in self.state.rows if r["train_error"] <= 1e-3), None
            ),
            "final": self.state.rows[-1] if self.state.rows else None,
            "flags": _first_flag_epochs(self.state.rows),
            "lam": self.loss.lam,
            "lam_source": self.loss.lam_source,
            "lam_exact": self.loss.exact,
            "loss": self.cfg.loss,
            "dataset": self.cfg.dataset,
            "model": self.cfg.model,
            "seed": self.cfg.seed,
            "epochs": self.cfg.epochs,
            "epochs_done": self.state.epoch,
            "environment": environment(self.device, self.dist),
        }
        if error is not None:
            summary["error"] = error
        text = json.dumps(_json_safe(summary), indent=2, allow_nan=False)
        atomic_write_text(self.run_dir / "summary.json", text + "\n")

    def _tensorboard(self, row: dict[str, Any]) -> None:
        if self._tb is None:
            self._tb = self._open_tensorboard()
        if self._tb is False:
            return
        for key, value in flatten_row(row).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._tb.add_scalar(key, value, global_step=row["epoch"])
        self._tb.flush()

    def _open_tensorboard(self) -> Any:
        if self.cfg.tensorboard == "false":
            return False
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            if self.cfg.tensorboard == "true":
                raise ConfigError(
                    "tensorboard='true' but the tensorboard package is not installed; "
                    "pip install 'ncmse[tensorboard]' or --set tensorboard=false"
                ) from exc
            return False
        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train from ``state.epoch`` to ``cfg.epochs``; returns the final summary."""
        cfg = self.cfg
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            self._write_summary("running")
        if cfg.tensorboard == "true":
            self._tb = self._open_tensorboard()
        if self.state.epoch == 0 and 0 in self.schedule and not self.state.rows:
            self.record(self.measure_row(0, self.optimizer.param_groups[0]["lr"]))
        crash_after = os.environ.get(CRASH_ENV)
        for epoch in range(self.state.epoch + 1, cfg.epochs + 1):
            lr = float(self.optimizer.param_groups[0]["lr"])
            self.train_epoch(epoch)
            self.scheduler.step()
            self.state.epoch = epoch
            if epoch in self.schedule:
                self.record(self.measure_row(epoch, lr))
            if (cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0) or epoch == cfg.epochs:
                self.save_checkpoint()
            if crash_after is not None and epoch == int(crash_after):
                os._exit(3)
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Write the final summary, close TensorBoard and draw the report (rank 0)."""
        self.state.wall_time = self._wall_time()
        self._t0 = time.perf_counter()
        if self._tb not in (None, False):
            self._tb.close()
        self._write_summary("finished")
        if self.dist.is_main and self.cfg.report:
            try:
                from ncmse.report import write_run_report
            except ImportError:
                pass
            else:
                write_run_report(self.run_dir)
        summary_path = self.run_dir / "summary.json"
        if self.dist.is_main:
            return json.loads(summary_path.read_text())
        return {"status": "finished", "tpt_epoch": self.state.tpt_epoch}


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def default_run_dir(cfg: Config, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if that exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{cfg.name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


def _prepare_new_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse an existing run directory unless ``overwrite``; then clear the run's entries."""
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if occupied and not overwrite:
        raise InputError(
            f"run directory {str(run_dir)!r} already exists; pass --resume {run_dir} to continue "
            "it, --overwrite to replace it, or --out with a new path"
        )
    if occupied:
        for name in RUN_ENTRIES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def train(
    cfg: Config,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Start a new training run.

    Parameters
    ----------
    cfg : Config
        Resolved configuration.
    run_dir : path, optional
        Output directory; default :func:`default_run_dir`.
    overwrite : bool
        Replace the files of an existing run directory.

    Returns
    -------
    dict
        The content of ``summary.json``.

    Raises
    ------
    InputError
        If ``run_dir`` exists and ``overwrite`` is false.
    DivergenceError
        If the loss becomes NaN/Inf (the last good checkpoint is kept).
    """
    dist_info = init_distributed(cfg)
    path = Path(run_dir) if run_dir is not None else None
    if dist_info.is_main and path is None:
        path = default_run_dir(cfg)
    error = None
    if dist_info.is_main:
        try:
            _prepare_new_dir(path, overwrite)
            path.mkdir(parents=True, exist_ok=True)
        except InputError as exc:
            error = str(exc)
    path, error = _broadcast((str(path), error), dist_info)
    if error is not None:
        raise InputError(error)
    path = Path(path)
    if dist_info.is_main:
        print(f"ncmse train: run directory {path}", file=sys.stderr)
    with _process_group(dist_info):
        return Trainer(cfg, path, dist_info).run()


def resume(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Continue a run from ``RUN_DIR/checkpoints/last.pt`` with the config in ``RUN_DIR``.

    Raises
    ------
    InputError
        If ``RUN_DIR`` has no ``config.yaml``.
    """
    path = Path(run_dir)
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise InputError(
            f"cannot resume {str(path)!r}: no config.yaml there; pass the directory of a run "
            "started by ncmse train"
        )
    import yaml

    cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()) or {}, where=str(cfg_path))
    dist_info = init_distributed(cfg)
    with _process_group(dist_info):
        trainer = Trainer(cfg, path, dist_info)
        if trainer.load_checkpoint() and trainer.state.epoch >= cfg.epochs:
            return trainer.finish()
        return trainer.run()
