"""A training run's state: its progress (:class:`RunState`) and the checkpoint that carries it.

A checkpoint (``RUN_DIR/checkpoints/last.pt``, keys in docs/ARCHITECTURE.md) holds the modules
(network, optimizer, scheduler), the RNG streams, the config, λ and the :class:`RunState`;
:func:`checkpoint_state` builds it, :func:`load_checkpoint_state` puts it back, so a resumed run
continues bit for bit. The trainer (:class:`ncmse.train.loop.Trainer`) calls both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ncmse.train.config import Config
from ncmse.train.distributed import capture_rng, restore_rng
from ncmse.train.losses import LossSpec
from ncmse.train.schedule import flow_times

__all__ = ["RunState", "checkpoint_state", "load_checkpoint_state"]


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


def checkpoint_state(
    state: RunState,
    *,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: Config,
    loss: LossSpec,
    wall_time: float,
) -> dict[str, Any]:
    """Everything an exact resume needs (modules, RNG, progress, rows, config).

    ``wall_time``: seconds trained so far, across resumes (the state's own is that of the last
    resume).
    """
    return {
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
        "epoch": state.epoch,
        "wall_time": wall_time,
        "tpt_epoch": state.tpt_epoch,
        "flow_time": state.flow_time,
        "rows": state.rows,
        "config": cfg.to_dict(),
        "lam": loss.lam,
        "lam_source": loss.lam_source,
        "run_id": state.run_id,
        "resume_changes": state.resume_changes,
    }


def load_checkpoint_state(
    ckpt: dict[str, Any],
    *,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: Config,
    steps_per_epoch: int,
) -> RunState:
    """Inverse of :func:`checkpoint_state`: load the modules and RNG streams, return the state.

    ``steps_per_epoch`` (the loader's batches) rebuilds τ for a checkpoint that does not store it
    (:func:`checkpoint_flow_time`).
    """
    network.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng(ckpt["rng"])
    epoch = int(ckpt["epoch"])
    state = RunState(
        epoch,
        float(ckpt["wall_time"]),
        ckpt["tpt_epoch"],
        list(ckpt["rows"]),
        flow_time=checkpoint_flow_time(ckpt, cfg, steps_per_epoch),
    )
    if ckpt.get("run_id"):  # older checkpoints have none: the run gets one from now on
        state.run_id = str(ckpt["run_id"])
    state.resume_changes = list(ckpt.get("resume_changes") or [])
    return state


def checkpoint_flow_time(ckpt: dict[str, Any], cfg: Config, steps_per_epoch: int) -> float:
    """τ at the checkpoint's epoch: stored, or (a checkpoint from before τ was stored)
    reconstructed from the run's schedule as it trained (its config, ``steps_per_epoch``)."""
    if ckpt.get("flow_time") is not None:
        return float(ckpt["flow_time"])
    return float(flow_times(cfg.to_dict(), steps_per_epoch)[int(ckpt["epoch"])])
