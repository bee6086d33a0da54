"""State of a run directory: what a sweep must do with it.

=========  ===================================================================================
state      meaning
=========  ===================================================================================
new        no run directory (or an empty one): start it
restart    files but no checkpoint (crashed before its first checkpoint): start it again
           with ``--overwrite``
resume     ``checkpoints/last.pt`` and ``config.yaml`` but not finished (killed): ``--resume``
done       ``summary.json`` says ``finished``: skipped
diverged   ``summary.json`` says ``diverged`` (NaN/Inf loss): a result, skipped; delete the
           directory to try again
mismatch   the directory holds a run of a different config: the sweep refuses to touch it
queued     submitted to SLURM by an earlier call and still pending or running: skipped
busy       another process writes the directory (holds its lock, :mod:`ncmse.rundir.lock`), e.g.
           the training process of a killed sweep that still runs: skipped, never a second
           trainer
=========  ===================================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ncmse.rundir import reader
from ncmse.rundir.lock import LOCK_NAME, is_locked
from ncmse.train.config import Config
from ncmse.verdicts.pairing import RUN_CONTROL_KEYS

__all__ = [
    "STATES",
    "RUN_CONTROL_KEYS",
    "config_differences",
    "read_summary",
    "run_state",
]

STATES: tuple[str, ...] = (
    "new",
    "restart",
    "resume",
    "done",
    "diverged",
    "mismatch",
    "queued",
    "busy",
)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/summary.json`` as a dict, or None if missing or unreadable (lenient)."""
    return reader.read_summary(run_dir, strict=False)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def config_differences(planned: dict[str, Any], run_dir: Path) -> list[str]:
    """Keys whose value in ``run_dir/config.yaml`` differs from ``planned`` (run control excluded).

    An absent or unreadable ``config.yaml`` gives no differences. A key that a run directory
    written by an older ncmse lacks counts at its default (as when that run is resumed).
    """
    found = reader.read_config(run_dir, strict=False)
    if found is None:
        return []

    found = {**Config().to_dict(), **found}
    keys = (set(planned) | set(found)) - RUN_CONTROL_KEYS
    return sorted(k for k in keys if not _same(planned.get(k), found.get(k)))


def _occupied(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(e.name != LOCK_NAME for e in run_dir.iterdir())


def run_state(run_dir: str | Path, planned: dict[str, Any] | None = None) -> str:
    """What a sweep must do with ``run_dir`` (one of :data:`STATES` except ``queued``).

    Parameters
    ----------
    run_dir : path
        The run directory.
    planned : dict, optional
        The resolved config the sweep plans for it; when given, a directory holding another
        config is reported as ``mismatch``.
    """
    path = Path(run_dir)
    if is_locked(path):
        return "busy"
    if not _occupied(path):
        return "new"
    if planned is not None and config_differences(planned, path):
        return "mismatch"
    status = (read_summary(path) or {}).get("status")
    if status == "finished":
        return "done"
    if status == "diverged":
        return "diverged"
    if (path / "checkpoints" / "last.pt").is_file() and (path / "config.yaml").is_file():
        return "resume"
    return "restart"
