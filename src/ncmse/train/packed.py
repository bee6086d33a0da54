"""Packed runs: K runs of one architecture and dataset trained together in one process.

Each run keeps everything it has when trained alone — its own model, optimizer (learning rate,
weight decay), learning-rate schedule, data order (its own seed's permutation), measurement
schedule and run directory. They are trained by the loop every run goes through,
:func:`ncmse.train.loop.train_together`: in lockstep, batch ``i`` of every run before batch
``i + 1`` of any, and on CUDA each run's batches and steps are issued on its own stream (each step
one CUDA-graph replay, :class:`ncmse.train.step.FastStep`), so the GPU overlaps the K small steps
that a single run leaves it too idle to fill. The arithmetic of each run is exactly the
arithmetic of that run trained alone: packing changes when kernels run, never what they compute
(on the CPU the packed runs are bit-identical to separate runs). The stop rule is the single
run's (:class:`ncmse.train.loop.StopCheck`, one host sync for the K runs every
:data:`~ncmse.train.loop.CHECK_EVERY` steps): a diverging run stops at the step it would stop at
alone while the others go on.

Why this design and not one batched network (``torch.func.stack_module_state`` + ``vmap``, which
turns each convolution into a grouped one): it measured 3.5× faster on an H200, keeps every run's
math bit-identical to its solo run, and needs no functional rewrite of BatchNorm or of the
optimizer (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ncmse.errors import ConfigError, DivergenceError
from ncmse.rundir.guard import lock_run_dir, missing_dirs, release_run_dir, remove_new_run_dir
from ncmse.train.config import config_from_dict
from ncmse.train.loop import Trainer, train_together
from ncmse.train.run import check_resume, config_of_run, open_run_dir, record_data_source
from ncmse.train.runtime import resolve_device
from ncmse.train.setup import load_config_dataset
from ncmse.train.sinks import Checkpoints

__all__ = ["PACK_STATES", "PackMember", "train_packed"]

#: what a member of a pack does at start: start a new run, start it again over a run directory
#: that holds no checkpoint (``--overwrite``), or continue from its checkpoint
PACK_STATES: tuple[str, ...] = ("new", "restart", "resume")


# --------------------------------------------------------------------------------------------
# packed training runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackMember:
    """One run of a pack.

    Attributes
    ----------
    run_dir : Path
        Its ordinary run directory.
    state : {"new", "restart", "resume"}
        What to do with it (see :data:`PACK_STATES`).
    config : dict, optional
        Its resolved config (``Config.to_dict()``); not needed for ``resume``, which reads
        ``run_dir/config.yaml``.
    """

    run_dir: Path
    state: str
    config: dict[str, Any] | None = None


def _shared_bundle(cfg: Any, device: torch.device, bundles: dict[tuple, Any]) -> Any:
    """Load each distinct dataset once, on the device (identical loads give identical data)."""
    subset = cfg.per_class is not None or cfg.test_per_class is not None
    key = (
        cfg.dataset,
        cfg.data_dir,
        cfg.download,
        cfg.per_class,
        cfg.test_per_class,
        cfg.seed if subset else None,  # the seed only draws the balanced subsets
        str(device),
    )
    if key not in bundles:
        b = load_config_dataset(cfg)
        bundles[key] = dataclasses.replace(
            b,
            train_x=b.train_x.to(device),
            train_y=b.train_y.to(device),
            test_x=b.test_x.to(device),
            test_y=b.test_y.to(device),
        )
    return bundles[key]


@dataclass
class _Planned:
    """A member checked before anything is created: its config, device and dataset."""

    member: PackMember
    cfg: Any
    device: torch.device
    bundle: Any


def _plan_member(member: PackMember, bundles: dict[tuple, Any]) -> _Planned:
    """Validate one member and load its dataset (shared with the other members); creates no
    file (a resume only reads its config.yaml)."""
    run_dir = Path(member.run_dir)
    if member.state not in PACK_STATES:
        raise ConfigError(f"pack member {run_dir}: state {member.state!r} not in {PACK_STATES}")
    if member.state == "resume":
        cfg = config_of_run(run_dir)
    else:
        if member.config is None:
            raise ConfigError(f"pack member {run_dir}: a new run needs its config")
        cfg = config_from_dict(dict(member.config), where=f"pack member {run_dir}")
        cfg = record_data_source(cfg)
    device = resolve_device(cfg.device, 0)
    return _Planned(member, cfg, device, _shared_bundle(cfg, device, bundles))


def _check_lockstep(planned: Sequence[_Planned]) -> None:
    """The members must have the same number of batches per epoch
    (:func:`ncmse.train.loop.lockstep_epoch`).

    Raises
    ------
    ConfigError
        Naming each run's batches, before any run directory is created.
    """
    batches = {
        str(p.member.run_dir): -(-len(p.bundle.train_x) // p.cfg.batch_size) for p in planned
    }
    if len(set(batches.values())) > 1:
        each = ", ".join(f"{d}: {n}" for d, n in batches.items())
        raise ConfigError(
            f"runs of a pack must have the same number of batches per epoch, got {each}: pack "
            "runs of one dataset and batch size only"
        )


def _open_trainer(plan: _Planned, opened: list[tuple[Path, list[Path] | None]]) -> Any:
    """The :class:`~ncmse.train.loop.Trainer` of one planned member, its run directory locked (as
    ``ncmse train`` does: one writer per directory); ``opened`` gets ``(run_dir, created)``
    (``created``: the directories a new run made, None for a resume)."""
    member, cfg, run_dir = plan.member, plan.cfg, Path(plan.member.run_dir)
    ckpt = None
    if member.state == "resume":
        lock_run_dir(run_dir, new=False)
        opened.append((run_dir, None))
        ckpt = Checkpoints(run_dir, enabled=False).load()
        changes = check_resume(cfg, ckpt, run_dir)
    else:
        created = missing_dirs(run_dir)
        open_run_dir(cfg, run_dir, overwrite=member.state == "restart")
        opened.append((run_dir, created))
    trainer = Trainer.from_config(cfg, run_dir, bundle=plan.bundle)
    trainer.console.label = run_dir.name  # the K runs share one console: name each line's run
    if member.state == "resume":
        trainer.restore(ckpt, changes)
    return trainer


def train_packed(members: Sequence[PackMember]) -> list[dict[str, Any]]:
    """Train the runs of a pack together (module docstring); each writes its run directory.

    Runs already at their last epoch are only finalised; a run that diverges stops (its summary
    says ``diverged``) while the others go on; runs resumed from different epochs are fine
    (each follows its own epoch numbers). Reports are not drawn here (the caller does).

    Returns
    -------
    list of dict
        Per member: its final ``summary.json`` content, or ``{"status": "diverged", "error":
        ...}``.

    Raises
    ------
    ConfigError
        Under ``torchrun`` (packing is one process), or when the runs do not fit together.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("packed runs train in one process; launch them without torchrun")

    bundles: dict[tuple, Any] = {}
    planned = [_plan_member(m, bundles) for m in members]  # every check before any file
    _check_lockstep(planned)
    opened: list[tuple[Path, list[Path] | None]] = []
    try:
        trainers = [_open_trainer(p, opened) for p in planned]
    except BaseException:  # a failed start leaves no half-made run directory behind
        for path, created in opened:
            if created is None:
                release_run_dir(path)
            else:
                remove_new_run_dir(path, created)
        raise
    try:
        return _train_packed(trainers)
    finally:
        for path, _ in opened:
            release_run_dir(path)


def _train_packed(trainers: list[Any]) -> list[dict[str, Any]]:
    """:func:`ncmse.train.loop.train_together` with a CUDA stream per run; a diverged run's
    outcome is ``{"status": "diverged", "error": ...}`` (and one line on stderr)."""
    streams = [torch.cuda.Stream(t.device) if t.device.type == "cuda" else None for t in trainers]
    for k, t in enumerate(trainers):
        t.step.pack = (k, len(trainers))

    def tell(trainer: Any, exc: DivergenceError) -> None:
        print(f"ncmse pack: {trainer.writer.path}: {exc}", file=sys.stderr)

    outcomes = train_together(trainers, streams, on_diverged=tell)
    return [
        {"status": "diverged", "error": str(o)} if isinstance(o, DivergenceError) else o
        for o in outcomes
    ]
