"""The content of a training run's ``summary.json`` (keys: docs/ARCHITECTURE.md).

:func:`run_summary` builds it from the run's state: while the run trains (``running``) it holds
the progress, the TPT epochs, the last row and the first epoch of each degenerate-feature flag;
when the run ends (``finished`` or ``diverged``) also the SPEC §7 verdicts and the §9 fit
(:func:`ncmse.verdicts.record.run_verdicts`). The trainer writes it through
:class:`ncmse.rundir.writer.RunWriter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ncmse.train.config import Config
from ncmse.train.losses import LossSpec
from ncmse.train.runtime import environment
from ncmse.train.state import RunState
from ncmse.verdicts.record import run_verdicts

__all__ = ["first_flag_epochs", "run_summary"]


def first_flag_epochs(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """``{flag: first epoch}`` of the degenerate-feature flags (test split: ``test_<flag>``)."""
    first: dict[str, int] = {}
    for row in rows:
        for key, prefix in (("flags", ""), ("test_flags", "test_")):
            for flag in filter(None, str(row.get(key) or "").split(";")):
                first.setdefault(prefix + flag, int(row["epoch"]))
    return first


def run_summary(
    status: str,
    state: RunState,
    *,
    cfg: Config,
    loss: LossSpec,
    device: torch.device,
    world_size: int,
    engine: dict[str, Any] | None,
    error: str | None = None,
) -> dict[str, Any]:
    """The content of ``summary.json`` now.

    Parameters
    ----------
    status : {"running", "finished", "diverged"}
        ``finished`` and ``diverged`` add the verdicts of the rows so far.
    state : RunState
        The run's progress and rows.
    cfg, loss : Config, LossSpec
        The run's config and criterion (λ and how it was derived).
    device, world_size
        Where the run trains (recorded under ``environment``).
    engine : dict, optional
        What the training step records (:meth:`ncmse.train.step.Step.describe`); None: no
        ``engine`` key.
    error : str, optional
        Why the run stopped (``diverged``).
    """
    rows = state.rows
    summary: dict[str, Any] = {
        "kind": "train",
        "status": status,
        "tpt_epoch": state.tpt_epoch,
        # PNAS's looser criterion: first measured epoch with training accuracy ≥ 99.9 %
        "tpt_epoch_999": next((int(r["epoch"]) for r in rows if r["train_error"] <= 1e-3), None),
        "final": rows[-1] if rows else None,
        "flags": first_flag_epochs(rows),
        "lam": loss.lam,
        "lam_source": loss.lam_source,
        "lam_exact": loss.exact,
        "loss_name": cfg.loss,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "epochs_done": state.epoch,
        "run_id": state.run_id,
        "environment": environment(device, world_size),
    }
    if state.resume_changes:
        summary["resume_changes"] = state.resume_changes
    if engine is not None:
        summary["engine"] = engine
    if error is not None:
        summary["error"] = error
    if status != "running":  # SPEC §7 verdicts and the §9 fit, from the training-split rows
        summary.update(
            run_verdicts(rows, loss=cfg.loss, tpt_epoch=state.tpt_epoch, lam_exact=loss.exact,
                         config=cfg.to_dict())
        )  # fmt: skip
    return summary
