"""Training loop of the paper's protocol, with collapse measurements along the way.

SGD (momentum, weight decay), learning rate ×γ at fixed fractions of the epochs, measurements of
every SPEC §2/§3 quantity at log-spaced epochs (train split, test split on request). Runs under
``torchrun`` with DistributedDataParallel: each rank trains and measures on its shard of every
global batch, statistics are reduced across ranks by :func:`ncmse.measure`, rank 0 writes files.

The loop (:meth:`Trainer.fit`) reads top to bottom::

    for epoch in ...:
        objective = train_epoch(epoch)          # TrainStep per batch, StopCheck every k steps
        if not finite(objective): stop           # diverged: summary says so, checkpoint kept
        scheduler.step()
        if measured epoch: record(measure_row)   # metrics files, summary, TensorBoard, console
        if checkpoint epoch: checkpoints.save(state_dict())

Files are written through :class:`ncmse.rundir.writer.RunWriter` (layout: docs/ARCHITECTURE.md); the
sinks are :mod:`ncmse.train.sinks`. The report is drawn by the caller (``ncmse train``), not here.
"""

from __future__ import annotations

import math
import os
import time
import types
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ncmse.errors import (
    ConfigError,
    DivergenceError,
    NonFiniteError,
)
from ncmse.rundir.writer import RunWriter
from ncmse.train.config import Config
from ncmse.train.distributed import (
    DistInfo,
    capture_rng,
    restore_rng,
)
from ncmse.train.runtime import configure_torch, environment, resolve_device
from ncmse.train.schedule import flow_times, lr_milestones
from ncmse.train.setup import Components, build_components, measure_split
from ncmse.train.sinks import Checkpoints, Console, TensorBoard
from ncmse.train.step import FastStep, Step, float32_math
from ncmse.verdicts.claims import in_tpt

__all__ = [
    "CHECK_EVERY",
    "CRASH_ENV",
    "crash_point",
    "RunState",
    "StopCheck",
    "TrainStep",
    "Trainer",
    "lr_milestones",
    "measurement_epochs",
    "freeze_features",
]

#: test hook: ``os._exit(3)`` right after the checkpoint of this epoch (simulates a kill)
CRASH_ENV = "NCMSE_CRASH_AFTER_EPOCH"


def crash_point(epochs: Iterable[int]) -> None:
    """The kill of the tests: ``os._exit(3)`` when :data:`CRASH_ENV` names one of ``epochs``
    (just ended, their checkpoints written); nothing when it is unset. One rule for single and
    packed runs."""
    value = os.environ.get(CRASH_ENV)
    if value is not None and int(value) in set(epochs):
        os._exit(3)


#: steps between two stop checks (and progress-bar updates); each costs one device sync
CHECK_EVERY = 10


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def measurement_epochs(
    epochs: int, points: int = 50, explicit: list[int] | None = None
) -> list[int]:
    """Epoch 0 and log-spaced measurement epochs in [1, epochs], always including 1 and ``epochs``.

    Epoch 0 is the network as initialised, before any step (SPEC §6): the "first" measurement
    of the SPEC §7 verdicts is then the untrained state.

    Parameters
    ----------
    epochs : int
        Length of the run.
    points : int
        Target number of distinct epochs ≥ 1 (fewer when ``epochs < points``: then every epoch).
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
        return list(range(0, epochs + 1))
    raw = points
    chosen: list[int] = []
    while raw <= 20 * points:
        grid = np.unique(np.rint(np.logspace(0.0, math.log10(epochs), raw)).astype(int))
        chosen = sorted({1, epochs, *grid.tolist()})
        if len(chosen) >= points:
            break
        raw += 1
    return [0, *chosen]


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train(mode)`` of a frozen module: whatever ``mode``, it (and its children) stay in eval."""
    return nn.Module.train(module, False)


def freeze_features(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every layer of ``model`` but its classifier; returns the classifier's parameters.

    The classifier is the final ``nn.Linear`` (:func:`ncmse.train.models.classifier_of`). Every
    other
    parameter stops requiring gradients, and every module that does not contain the classifier
    stays in eval mode even when the training loop calls ``model.train()``: BatchNorm layers
    normalise with their running statistics *as initialised* (which they never update) and
    dropout is off, so the features are one fixed function of the input — those the classifier
    is trained on are exactly those measured (in eval mode). Keeping BatchNorm in train mode
    instead would train the classifier on batch-normalised features that differ from the
    measured ones.

    Parameters
    ----------
    model : nn.Module
        The network (not a DDP wrapper).

    Returns
    -------
    list of nn.Parameter
        The parameters left to train (weight and bias of the classifier).
    """
    from ncmse.train.models import classifier_of

    head = classifier_of(model)
    keep = {id(p) for p in head.parameters()}
    for param in model.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)
    for module in model.modules():
        if not any(sub is head for sub in module.modules()):
            module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
            module.eval()
    return list(head.parameters())


# --------------------------------------------------------------------------------------------
# the training step and the stop decision
# --------------------------------------------------------------------------------------------


class TrainStep:
    """One optimisation step on a batch; the piece a faster engine replaces.

    ``step(x, y) -> (objective, correct)``: forward, ``criterion(out, y)`` (mean over the batch),
    backward, optimizer step. Both returns are detached device tensors (no host sync).

    Parameters
    ----------
    model : nn.Module
        The module to call (the DDP wrapper under torchrun).
    optimizer : torch.optim.Optimizer
    criterion : nn.Module
        ``criterion(logits[B, C], labels[B]) -> scalar``.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.criterion = criterion
        self.pack: tuple[int, int] = (0, 1)

    def invalidate(self) -> None:
        """Nothing is captured: every call reads the current modules."""

    def describe(self) -> None:
        """Records nothing in ``summary.json``."""
        return None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        objective = self.criterion(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        return objective.detach(), (out.detach().argmax(dim=1) == y).sum()


class StopCheck:
    """The stop decision: the running objective is NaN/Inf on any rank.

    Checked every ``every`` steps and at the last step of an epoch, whether or not a progress
    bar is shown; under DDP the flag is all-reduced (max), so every rank stops at the same step
    and none enters a collective the others left.
    """

    def __init__(self, every: int = CHECK_EVERY, world_size: int = 1) -> None:
        self.every = max(1, int(every))
        self.world_size = world_size

    def due(self, step: int, steps: int) -> bool:
        """Whether step ``step`` (1-based) of ``steps`` is a check point."""
        return step % self.every == 0 or step == steps

    def should_stop(self, running_sum: torch.Tensor) -> bool:
        """True when ``running_sum`` is not finite here or on another rank."""
        flag = (~torch.isfinite(running_sum)).to(torch.float32).reshape(1)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


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
    #: τ = Σ η over the optimiser steps taken so far (SPEC §9's clock)
    flow_time: float = 0.0
    #: identifies the run in summary.json and every checkpoint (a copied checkpoint is foreign)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: config changes accepted on resume: ``{"epoch", "key", "old", "new"}`` each
    resume_changes: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One training run: model, optimizer, schedule, and the sinks the loop reports to.

    Build it with :meth:`from_config` (files in a run directory) or directly from
    :class:`Components` (no files unless ``writer`` is given: benchmarks, tests). ``trainer.step``
    (a :class:`TrainStep`) may be replaced by any callable ``(x, y) -> (objective, correct)``
    with the same contract, e.g. a faster engine; ``trainer.checkpoints`` by any object with
    ``path``, ``exists()``, ``save(state)`` and ``load()``.

    Parameters
    ----------
    cfg : Config
        Resolved configuration.
    components : Components
        Data, network and loss (:func:`build_components`).
    dist_info : DistInfo, optional
        Process group of this process.
    writer : RunWriter, optional
        Writes config, metrics and summary; None writes nothing.
    checkpoints, console, tensorboard : optional
        Sinks (:mod:`ncmse.train.sinks`); None: no checkpoints, a silent console, no TensorBoard.
    """

    def __init__(
        self,
        cfg: Config,
        components: Components,
        *,
        dist_info: DistInfo | None = None,
        writer: RunWriter | None = None,
        checkpoints: Checkpoints | None = None,
        console: Console | None = None,
        tensorboard: TensorBoard | None = None,
    ) -> None:
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        self.device = components.device
        self.bundle, self.network, self.loss_spec = (
            components.bundle,
            components.model,
            components.loss,
        )
        self.num_classes = int(self.bundle.num_classes)
        b = self.bundle
        self.train_x, self.train_y = b.train_x.to(self.device), b.train_y.to(self.device)
        self.test_x, self.test_y = b.test_x.to(self.device), b.test_y.to(self.device)
        params = freeze_features(self.network) if cfg.freeze_features else self.network.parameters()
        self.optimizer = torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, lr_milestones(cfg.epochs, cfg.lr_milestones), gamma=cfg.lr_gamma
        )
        self.train_loader = self._train_loader()
        # eager on the CPU (TrainStep's numbers, bit for bit), CUDA-graphed on one GPU
        self.step: Step = FastStep(
            _wrap_ddp(self.network, self.device, self.dist),
            self.optimizer,
            self.loss_spec.module,
            precision=cfg.precision,
            channels_last=cfg.channels_last,
            cuda_graph=cfg.cuda_graph,
            batch_size=self.train_loader.batch_size,
        )
        self.stop_check = StopCheck(CHECK_EVERY, self.dist.world_size)
        self.schedule = set(measurement_epochs(cfg.epochs, cfg.measure_points, cfg.measure_epochs))
        self.writer = writer
        self.checkpoints = checkpoints
        self.checkpoint_epoch: int | None = None  # epoch of the last checkpoint saved or loaded
        self.console = console or Console(enabled=False)
        self.epoch_steps = 0  # optimiser steps taken in the current (last) epoch
        self.tensorboard = tensorboard
        self.state = RunState()
        self._t0 = time.perf_counter()

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        run_dir: str | os.PathLike[str],
        dist_info: DistInfo | None = None,
        *,
        bundle: Any = None,
    ) -> Trainer:
        """The trainer of ``ncmse train``: components of ``cfg``, files in ``run_dir`` (rank 0).

        ``bundle``: the dataset of ``cfg`` already loaded (packed runs share one).
        """
        info = dist_info or DistInfo()
        device = resolve_device(cfg.device, info.local_rank)
        configure_torch(cfg, device)
        main = info.is_main
        return cls(
            cfg,
            build_components(cfg, device, bundle=bundle),
            dist_info=info,
            writer=RunWriter(run_dir, enabled=main),
            checkpoints=Checkpoints(run_dir, enabled=main),
            console=Console(enabled=main and not cfg.quiet, warnings=main),
            tensorboard=TensorBoard(run_dir, cfg.tensorboard, enabled=main),
        )

    def _train_loader(self) -> Any:
        from ncmse.train.data import TensorLoader

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

    # ---- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train from ``state.epoch`` to ``cfg.epochs``; returns the final summary.

        Raises
        ------
        DivergenceError
            When the objective (or a measurement's features) becomes NaN/Inf; summary.json
            then says ``diverged`` and the last good checkpoint is kept.
        """
        self.begin()
        for epoch in range(self.state.epoch + 1, self.cfg.epochs + 1):
            lr = self.lr
            objective = self.train_epoch(epoch)
            self.end_epoch(epoch, lr, objective, steps=self.epoch_steps)
            crash_point((epoch,))
        return self.finish()

    def begin(self) -> None:
        """Write the config and a ``running`` summary; measure epoch 0 when it is scheduled."""
        if self.writer is not None:
            self.writer.write_config(self.cfg.to_dict())
            self.writer.write_summary(self.summary("running"))
        if self.state.epoch == 0 and 0 in self.schedule and not self.state.rows:
            self.record(self.measure_row(0, self.lr))

    def end_epoch(
        self, epoch: int, lr: float, objective: float, *, steps: int | None = None
    ) -> None:
        """After training epoch ``epoch`` at ``lr``: stop if diverged, schedule, measure, save.

        ``steps``: optimiser steps the epoch took at ``lr`` (default: every batch of the loader);
        the flow time τ advances by ``lr × steps``.

        Raises
        ------
        DivergenceError
            When ``objective`` is NaN/Inf (:meth:`stop_diverged`).
        """
        if not math.isfinite(objective):
            self.stop_diverged(epoch, "training objective")
        self.state.flow_time += lr * (len(self.train_loader) if steps is None else steps)
        self.scheduler.step()
        self.state.epoch = epoch
        if epoch in self.schedule:
            self.record(self.measure_row(epoch, lr))
        every = self.cfg.checkpoint_every
        if (every and epoch % every == 0) or epoch == self.cfg.epochs:
            self.save_checkpoint()

    def train_epoch(self, epoch: int) -> float:
        """One pass over the shuffled training set; returns the mean objective (NaN: stopped).

        The stop check runs every ``CHECK_EVERY`` steps on every rank, whatever the console does.
        """
        self.step.model.train()
        self.train_loader.set_epoch(epoch)
        steps = len(self.train_loader)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        self.epoch_steps = 0
        self.console.start_epoch(epoch, self.cfg.epochs, steps)
        try:
            for i, (xb, yb) in enumerate(self.train_loader, start=1):
                objective, right = self.step(xb, yb)
                self.epoch_steps = i
                total += objective * len(yb)
                correct += right
                seen += len(yb)
                if self.stop_check.due(i, steps):
                    if self.stop_check.should_stop(total):
                        return math.nan
                    if self.console.wants_progress:
                        self.console.progress(i, float(total) / seen, float(correct) / seen)
        finally:
            self.console.end_epoch()
        return float(total) / max(seen, 1)

    def measure_row(self, epoch: int, lr: float) -> dict[str, Any]:
        """Measure the train split (and test when configured) into one metrics row.

        A non-finite network or feature stops the run as diverged (:meth:`stop_diverged`).
        """
        kw = {
            "num_classes": self.num_classes,
            "batch_size": self.cfg.measure_batch_size,
            "memory_budget_bytes": self.cfg.memory_budget_bytes,
            "dist_info": self.dist,
        }
        try:
            with float32_math(self.cfg.precision, self.device):  # never autocast
                train = measure_split(
                    self.network, self.loss_spec, self.train_x, self.train_y, **kw
                )
            row: dict[str, Any] = {
                "epoch": epoch,
                "lr": lr,
                "wall_time": self.wall_time(),
                "train_error": 1.0 - train["accuracy"],
                "flow_time": self.state.flow_time,
            }
            row.update(train)
            if self.cfg.measure_test:
                with float32_math(self.cfg.precision, self.device):
                    test = measure_split(
                        self.network, self.loss_spec, self.test_x, self.test_y, **kw
                    )
                row.update({f"test_{k}": v for k, v in test.items()})
        except NonFiniteError:
            self.stop_diverged(epoch, "network's outputs or features")
        return row

    def record(self, row: dict[str, Any]) -> None:
        """Keep ``row``; update the TPT epoch; write metrics + summary, TensorBoard, console."""
        self.state.rows.append(row)
        if self.state.tpt_epoch is None and in_tpt(row):
            self.state.tpt_epoch = int(row["epoch"])
        if self.writer is not None:
            self.writer.write_rows(self.state.rows)
            self.writer.write_summary(self.summary("running"))
        if self.tensorboard is not None:
            self.tensorboard.row(row)
        self.console.row(row)
        self.console.flags(row)

    def stop_diverged(self, epoch: int, what: str) -> None:
        """Write the ``diverged`` summary and raise :class:`DivergenceError`."""
        ckpt = self.checkpoints
        where = (
            f"the last good checkpoint (epoch {self.checkpoint_epoch}) is kept at {ckpt.path}"
            if ckpt is not None and ckpt.exists() and self.checkpoint_epoch is not None
            else "no checkpoint was written yet"
        )
        msg = (
            f"the {what} became NaN/Inf in epoch {epoch} (lr={self.lr:g}); {where}. "
            "Lower the learning rate (--set lr=...) and start again"
        )
        if self.writer is not None:
            self.writer.write_summary(self.summary("diverged", error=msg))
        if self.tensorboard is not None:
            self.tensorboard.close()
        raise DivergenceError(msg)

    def finish(self) -> dict[str, Any]:
        """Write the final summary and close TensorBoard; returns the summary."""
        self.state.wall_time = self.wall_time()
        self._t0 = time.perf_counter()
        if self.tensorboard is not None:
            self.tensorboard.close()
        summary = self.summary("finished")
        if self.writer is not None:
            self.writer.write_summary(summary)
        return summary

    # ---- state -------------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def wall_time(self) -> float:
        """Seconds of training so far, across resumes."""
        return self.state.wall_time + (time.perf_counter() - self._t0)

    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        """The content of ``summary.json`` now (docs/ARCHITECTURE.md)."""
        rows = self.state.rows
        summary: dict[str, Any] = {
            "kind": "train",
            "status": status,
            "tpt_epoch": self.state.tpt_epoch,
            # PNAS's looser criterion: first measured epoch with training accuracy ≥ 99.9 %
            "tpt_epoch_999": next(
                (int(r["epoch"]) for r in rows if r["train_error"] <= 1e-3), None
            ),
            "final": rows[-1] if rows else None,
            "flags": _first_flag_epochs(rows),
            "lam": self.loss_spec.lam,
            "lam_source": self.loss_spec.lam_source,
            "lam_exact": self.loss_spec.exact,
            "loss_name": self.cfg.loss,
            "dataset": self.cfg.dataset,
            "model": self.cfg.model,
            "seed": self.cfg.seed,
            "epochs": self.cfg.epochs,
            "epochs_done": self.state.epoch,
            "run_id": self.state.run_id,
            "environment": environment(self.device, self.dist.world_size),
        }
        if self.state.resume_changes:
            summary["resume_changes"] = self.state.resume_changes
        engine = self.step.describe()
        if engine is not None:
            summary["engine"] = engine
        if error is not None:
            summary["error"] = error
        if status != "running":  # SPEC §7 verdicts and the §9 fit, from the training-split rows
            from ncmse.verdicts.record import run_verdicts

            summary.update(
                run_verdicts(rows, loss=self.cfg.loss, tpt_epoch=self.state.tpt_epoch,
                             lam_exact=self.loss_spec.exact, config=self.cfg.to_dict())
            )  # fmt: skip
        return summary

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (modules, RNG, progress, rows, config)."""
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "epoch": self.state.epoch,
            "wall_time": self.wall_time(),
            "tpt_epoch": self.state.tpt_epoch,
            "flow_time": self.state.flow_time,
            "rows": self.state.rows,
            "config": self.cfg.to_dict(),
            "lam": self.loss_spec.lam,
            "lam_source": self.loss_spec.lam_source,
            "run_id": self.state.run_id,
            "resume_changes": self.state.resume_changes,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.network.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt["rng"])
        self.step.invalidate()  # a captured graph holds the replaced tensors
        epoch = int(ckpt["epoch"])
        self.state = RunState(
            epoch,
            float(ckpt["wall_time"]),
            ckpt["tpt_epoch"],
            list(ckpt["rows"]),
            flow_time=self._checkpoint_flow_time(ckpt, epoch),
        )
        if ckpt.get("run_id"):  # older checkpoints have none: the run gets one from now on
            self.state.run_id = str(ckpt["run_id"])
        self.state.resume_changes = list(ckpt.get("resume_changes") or [])
        self._t0 = time.perf_counter()

    def _checkpoint_flow_time(self, ckpt: dict[str, Any], epoch: int) -> float:
        """τ at the checkpoint's epoch: stored, or (a checkpoint from before τ was stored)
        reconstructed from the run's schedule as it trained (its config, this loader's length)."""
        if ckpt.get("flow_time") is not None:
            return float(ckpt["flow_time"])
        return float(flow_times(self.cfg.to_dict(), len(self.train_loader))[epoch])

    def save_checkpoint(self) -> None:
        """Hand :meth:`state_dict` to the checkpoint sink (rank 0 writes)."""
        if self.checkpoints is not None:
            self.checkpoints.save(self.state_dict())
            self.checkpoint_epoch = self.state.epoch

    def restore(
        self, ckpt: dict[str, Any] | None = None, changes: list[dict[str, Any]] | None = None
    ) -> bool:
        """Load the run's checkpoint (``ckpt``, else the one in the run directory) if there is
        one; returns whether there was. ``changes`` (from :func:`check_resume`) are recorded in
        the run's ``resume_changes``."""
        if ckpt is None:
            ckpt = self.checkpoints.load() if self.checkpoints is not None else None
        if ckpt is None:
            return False
        self.load_state_dict(ckpt)
        self.state.resume_changes.extend(changes or [])
        self.checkpoint_epoch = self.state.epoch
        if self.state.rows:
            self.console.nc1 = self.state.rows[-1].get("nc1")
        return True


def _wrap_ddp(net: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    if info.world_size == 1:
        return net
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------
