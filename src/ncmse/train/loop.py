"""The training loop: one epoch loop for one run or K packed runs, one stop rule, the trainer.

A :class:`Trainer` is one run of the paper's protocol: SGD (momentum, weight decay), learning rate
×γ at fixed fractions of the epochs, measurements of every SPEC §2/§3 quantity at log-spaced
epochs (train split, test split on request). Runs under ``torchrun`` with
DistributedDataParallel: each rank trains and measures on its shard of every global batch,
statistics are reduced across ranks by :func:`ncmse.measure`, rank 0 writes files.

:func:`train_together` trains K ≥ 1 trainers (``Trainer.fit`` is K = 1, a pack of
:mod:`ncmse.train.packed` is K > 1) and reads top to bottom::

    for each round:                                  # every unfinished run's next epoch
        totals = lockstep_epoch(trainers, epochs)     # batch i of every run before batch i + 1
        for each run:
            end_epoch(epoch, lr, objective, steps)    # diverged? schedule, measure, checkpoint

:func:`lockstep_epoch` steps each run's :class:`~ncmse.train.step.Step` on its own CUDA stream
(None on the CPU) and applies the one stop rule, :class:`StopCheck`: every :data:`CHECK_EVERY`
steps and at the epoch's last step, one host synchronisation reads every run's flag "running
objective NaN/Inf" (all-reduced across ranks under DDP); a flagged run steps no more in that
epoch and is stopped as diverged (its summary says so, its last good checkpoint is kept), the
others go on. Each run's arithmetic is that of the run trained alone.

Files are written through :class:`ncmse.rundir.writer.RunWriter` (layout: docs/ARCHITECTURE.md),
``summary.json``'s content by :mod:`ncmse.train.summary`, checkpoints' by :mod:`ncmse.train.state`;
the sinks are :mod:`ncmse.train.sinks`. The report is drawn by the caller (``ncmse train``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ncmse.errors import ConfigError, DivergenceError, NonFiniteError
from ncmse.rundir.writer import RunWriter
from ncmse.train.config import Config
from ncmse.train.distributed import DistInfo
from ncmse.train.runtime import configure_torch, resolve_device
from ncmse.train.schedule import measurement_epochs
from ncmse.train.setup import (
    Components,
    build_components,
    build_optimizer,
    build_step,
    build_train_loader,
    measure_split,
)
from ncmse.train.sinks import Checkpoints, Console, TensorBoard
from ncmse.train.state import RunState, checkpoint_state, load_checkpoint_state
from ncmse.train.step import Step, float32_math
from ncmse.train.summary import run_summary
from ncmse.verdicts.claims import in_tpt

__all__ = [
    "CHECK_EVERY",
    "EpochTotals",
    "StopCheck",
    "Trainer",
    "lockstep_epoch",
    "train_together",
]

#: steps between two stop checks (and progress-bar updates); each costs one host sync
CHECK_EVERY = 10


# --------------------------------------------------------------------------------------------
# the epoch loop and the stop rule
# --------------------------------------------------------------------------------------------


class StopCheck:
    """The stop rule: a run's running objective is NaN/Inf, here or on another rank.

    Checked every ``every`` steps and at the last step of an epoch, whether or not a progress
    bar is shown; under DDP the flags are all-reduced (max), so every rank stops a run at the
    same step and none enters a collective the others left.
    """

    def __init__(self, every: int = CHECK_EVERY, world_size: int = 1) -> None:
        self.every = max(1, int(every))
        self.world_size = world_size

    def due(self, step: int, steps: int) -> bool:
        """Whether step ``step`` (1-based) of ``steps`` is a check point."""
        return step % self.every == 0 or step == steps

    def nonfinite(self, running_sums: Sequence[torch.Tensor]) -> list[bool]:
        """For each running sum, whether it is NaN/Inf here or on another rank: one host sync
        for all of them (they are read on the current stream; join their streams first)."""
        device = running_sums[0].device
        flags = torch.stack(
            [(~torch.isfinite(s)).to(device=device, dtype=torch.float32) for s in running_sums]
        )
        if self.world_size > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return [flag > 0 for flag in flags.tolist()]


@dataclass
class EpochTotals:
    """What one run's epoch added up, on its device: Σ batch objective × batch size, Σ correct,
    the samples trained on and the steps taken; ``stopped`` when the stop rule ended it."""

    objective_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    steps: int = 0
    stopped: bool = False

    @property
    def objective(self) -> float:
        """The mean training objective of the epoch; NaN when the run was stopped."""
        return math.nan if self.stopped else float(self.objective_sum) / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        """The fraction of training samples classified right as they were stepped on."""
        return float(self.correct) / max(self.seen, 1)


def _on(stream: Any) -> contextlib.AbstractContextManager:
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def _join(streams: Sequence[Any]) -> None:
    """Make the current stream wait for the work queued on ``streams`` (None: nothing)."""
    for stream in streams:
        if stream is not None:
            torch.cuda.current_stream(stream.device).wait_stream(stream)


class _Lane:
    """One run in :func:`lockstep_epoch`: its step, its batches of the epoch, its stream."""

    def __init__(self, step: Step, batches: Iterator, stream: Any, device: torch.device) -> None:
        self.step, self.batches, self.stream = step, batches, stream
        with _on(stream):
            self.totals = EpochTotals(
                torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
            )

    def advance(self) -> None:
        """Train on the next batch (on the lane's stream; no host sync)."""
        with _on(self.stream):
            xb, yb = next(self.batches)
            objective, right = self.step(xb, yb)
            self.totals.objective_sum += objective * len(yb)
            self.totals.correct += right
            self.totals.seen += len(yb)
            self.totals.steps += 1


def lockstep_epoch(
    trainers: Sequence[Trainer], epochs: Sequence[int], streams: Sequence[Any] | None = None
) -> list[EpochTotals]:
    """One epoch of each of K ≥ 1 runs in lockstep, with the stop rule (module docstring).

    Parameters
    ----------
    trainers : sequence of Trainer
        The runs; their loaders must have the same number of batches.
    epochs : sequence of int
        Each run's epoch number (it selects the run's data order).
    streams : sequence of CUDA streams or None, optional
        Where each run's batches and steps are issued (None: the current stream).

    Returns
    -------
    list of EpochTotals
        Per run, in the order of ``trainers``.

    Raises
    ------
    ConfigError
        If the runs do not have the same number of batches.
    """
    k = len(trainers)
    streams = list(streams) if streams is not None else [None] * k
    if len(epochs) != k or len(streams) != k:
        raise ConfigError(f"got {len(epochs)} epochs and {len(streams)} streams for {k} runs")
    lengths = {len(t.train_loader) for t in trainers}
    if len(lengths) != 1:
        raise ConfigError(
            f"runs of a pack must have the same number of batches per epoch, got "
            f"{sorted(lengths)}: pack runs of one dataset and batch size only"
        )
    (n,) = lengths
    lanes = []
    for t, epoch, stream in zip(trainers, epochs, streams):
        t.step.model.train()
        t.train_loader.set_epoch(epoch)
        with _on(stream):
            lanes.append(_Lane(t.step, iter(t.train_loader), stream, t.device))
    stop = trainers[0].stop_check
    console = trainers[0].console if k == 1 else None  # K runs share a terminal: no bars
    if console is not None:
        console.start_epoch(epochs[0], trainers[0].cfg.epochs, n)
    try:
        live = lanes
        for i in range(1, n + 1):
            for lane in live:
                lane.advance()
            if not stop.due(i, n):
                continue
            _join([lane.stream for lane in live])
            flags = stop.nonfinite([lane.totals.objective_sum for lane in live])
            for lane, flag in zip(live, flags):
                lane.totals.stopped = flag
            live = [lane for lane in live if not lane.totals.stopped]
            if not live:  # every run stopped (the flags are the same on every rank)
                break
            if console is not None and console.wants_progress:
                totals = live[0].totals
                console.progress(i, totals.objective, totals.accuracy)
    finally:
        if console is not None:
            console.end_epoch()
    _join(streams)
    return [lane.totals for lane in lanes]


def train_together(
    trainers: Sequence[Trainer],
    streams: Sequence[Any] | None = None,
    *,
    on_diverged: Callable[[Trainer, DivergenceError], None] | None = None,
) -> list[dict[str, Any] | DivergenceError]:
    """Train K ≥ 1 runs, each from its ``state.epoch`` to its last epoch, in lockstep.

    A run already at its last epoch is only finished (:meth:`Trainer.finish`); runs resumed from
    different epochs are fine (each follows its own epoch numbers). A run that diverges stops
    (``on_diverged`` is told) while the others go on.

    Returns
    -------
    list
        Per run: its final summary, or the :class:`DivergenceError` that stopped it.
    """
    k = len(trainers)
    streams = list(streams) if streams is not None else [None] * k
    results: dict[int, dict[str, Any] | DivergenceError] = {}
    active = []
    for i, t in enumerate(trainers):
        if t.state.epoch >= t.cfg.epochs:
            results[i] = t.finish()
        else:
            t.begin()
            active.append(i)
    while active:
        epochs = [trainers[i].state.epoch + 1 for i in active]
        lrs = [trainers[i].lr for i in active]
        totals = lockstep_epoch([trainers[i] for i in active], epochs, [streams[i] for i in active])
        still = []
        for i, epoch, lr, total in zip(active, epochs, lrs, totals):
            t = trainers[i]
            try:
                t.end_epoch(epoch, lr, total.objective, steps=total.steps)
            except DivergenceError as exc:
                results[i] = exc
                if on_diverged is not None:
                    on_diverged(t, exc)
                continue
            if t.state.epoch >= t.cfg.epochs:
                results[i] = t.finish()
            else:
                still.append(i)
        active = still
    return [results[i] for i in range(k)]


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """One training run: model, optimizer, schedule, and the sinks the loop reports to.

    Build it with :meth:`from_config` (files in a run directory) or directly from
    :class:`Components` (no files unless ``writer`` is given: benchmarks, tests). ``trainer.step``
    (a :class:`~ncmse.train.step.FastStep`) may be replaced by any
    :class:`~ncmse.train.step.Step`, e.g. the eager :class:`~ncmse.train.step.TrainStep`;
    ``trainer.checkpoints`` by any object with ``path``, ``exists()``, ``save(state)`` and
    ``load()``.

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
        b = self.bundle = components.bundle
        self.network, self.loss_spec = components.model, components.loss
        self.num_classes = int(b.num_classes)
        self.train_x, self.train_y = b.train_x.to(self.device), b.train_y.to(self.device)
        self.test_x, self.test_y = b.test_x.to(self.device), b.test_y.to(self.device)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.network)
        self.train_loader = build_train_loader(cfg, self.train_x, self.train_y, self.dist)
        self.step: Step = build_step(cfg, self.network, self.optimizer, self.loss_spec.module,
                                     device=self.device, dist_info=self.dist,
                                     batch_size=self.train_loader.batch_size)  # fmt: skip
        self.stop_check = StopCheck(CHECK_EVERY, self.dist.world_size)
        self.schedule = set(measurement_epochs(cfg.epochs, cfg.measure_points, cfg.measure_epochs))
        self.writer = writer
        self.checkpoints = checkpoints
        self.checkpoint_epoch: int | None = None  # epoch of the last checkpoint saved or loaded
        self.console = console or Console(enabled=False)
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

    # ---- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train from ``state.epoch`` to ``cfg.epochs`` (:func:`train_together` of this run
        alone); returns the final summary.

        Raises
        ------
        DivergenceError
            When the objective (or a measurement's features) becomes NaN/Inf; summary.json
            then says ``diverged`` and the last good checkpoint is kept.
        """
        (outcome,) = train_together([self])
        if isinstance(outcome, DivergenceError):
            raise outcome
        return outcome

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
        """The content of ``summary.json`` now (:func:`ncmse.train.summary.run_summary`)."""
        return run_summary(status, self.state, cfg=self.cfg, loss=self.loss_spec,
                           device=self.device, world_size=self.dist.world_size,
                           engine=self.step.describe(), error=error)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the run now (:func:`ncmse.train.state.checkpoint_state`)."""
        return checkpoint_state(self.state, network=self.network, optimizer=self.optimizer,
                                scheduler=self.scheduler, cfg=self.cfg, loss=self.loss_spec,
                                wall_time=self.wall_time())  # fmt: skip

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (:func:`ncmse.train.state.load_checkpoint_state`)."""
        self.state = load_checkpoint_state(ckpt, network=self.network, optimizer=self.optimizer,
                                           scheduler=self.scheduler, cfg=self.cfg,
                                           steps_per_epoch=len(self.train_loader))  # fmt: skip
        self.step.invalidate()  # a captured graph holds the replaced tensors
        self._t0 = time.perf_counter()

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
