"""What the training loop reports to: console/progress bar, TensorBoard, checkpoints.

The loop in :mod:`ncmse.train.loop` calls these objects; none of them decides anything about the run
(the stop decision is :class:`ncmse.train.loop.StopCheck`). On processes that must not write (DDP
ranks ≠ 0) the loop gets disabled instances, whose methods do nothing.

Checkpoint I/O happens only in :class:`Checkpoints` (``RUN_DIR/checkpoints/last.pt`` and the one
before it, ``prev.pt``, written and verified by :mod:`ncmse.rundir.checkpoint`); swapping the
storage
means replacing that class.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ncmse.collapse.result import FLAGS, flatten_row
from ncmse.errors import ConfigError
from ncmse.rundir.checkpoint import load_checkpoint as load_verified
from ncmse.rundir.checkpoint import save_checkpoint

__all__ = ["Checkpoints", "Console", "TensorBoard", "load_checkpoint"]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a training checkpoint (on the CPU): a checkpoint file or ``RUN_DIR``.

    A damaged ``last.pt`` falls back to ``prev.pt`` with a message naming both
    (:func:`ncmse.rundir.checkpoint.load_checkpoint`).

    Raises
    ------
    CheckpointError
        If the file is missing, damaged or not an ncmse checkpoint (an :class:`InputError`).
    """
    return load_verified(path, fix="pass another checkpoint or RUN_DIR")[0]


class Checkpoints:
    """The checkpoints of a run directory: ``save(state)`` and ``load() -> state | None``.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    enabled : bool
        Whether this process writes (loading works on every process).
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "checkpoints" / "last.pt"
        self.enabled = enabled

    def exists(self) -> bool:
        """Whether a checkpoint has been written (``last.pt`` or ``prev.pt``)."""
        return self.path.is_file() or self.path.with_name("prev.pt").is_file()

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` to ``last.pt``, the former one kept as ``prev.pt`` (atomic, fsync'ed)."""
        if self.enabled:
            save_checkpoint(state, self.path.parent)

    def load(self) -> dict[str, Any] | None:
        """The saved state (``prev.pt`` when ``last.pt`` is damaged), or None when there is none.

        Raises
        ------
        CheckpointError
            If checkpoint files exist but none is usable (the message says how to restart).
        """
        if not self.exists():
            return None

        return load_verified(
            self.run_dir,
            fix=f"start the run again with ncmse train --out {self.run_dir} --overwrite "
            "(and the same --config/--set)",
        )[0]


class Console:
    """Progress bar per epoch and one line per measurement, on stderr.

    Parameters
    ----------
    enabled : bool
        False: no bar, no measurement lines (``quiet``, DDP ranks ≠ 0).
    warnings : bool, optional
        Whether degenerate-feature warnings are printed (default: ``enabled``); ``ncmse train``
        prints them on rank 0 even when ``quiet``, since the numbers of that row need care.
    label : str, optional
        Begins every line as ``[label] `` (the run's name when several runs share a console:
        packed runs).
    """

    def __init__(
        self, *, enabled: bool = True, warnings: bool | None = None, label: str | None = None
    ) -> None:
        self.enabled = enabled
        self.warnings = enabled if warnings is None else warnings
        self.label = label
        self._bar: Any = None
        self.nc1: float | None = None

    @property
    def prefix(self) -> str:
        """``"[label] "``, or "" without a label."""
        return f"[{self.label}] " if self.label else ""

    @property
    def wants_progress(self) -> bool:
        """Whether a progress bar is shown (stderr is a terminal); the loop then feeds it."""
        return self.enabled and sys.stderr.isatty()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """Open the progress bar of one epoch."""
        if self.wants_progress:
            self._bar = tqdm(
                total=steps,
                desc=f"{self.prefix}epoch {epoch}/{epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def progress(self, step: int, objective: float, accuracy: float) -> None:
        """Move the bar to ``step`` with the running mean objective and accuracy."""
        if self._bar is None:
            return
        post = {"objective": f"{objective:.4g}", "acc": f"{accuracy:.4f}"}
        if self.nc1 is not None:
            post["nc1"] = f"{self.nc1:.3g}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(step - self._bar.n)

    def end_epoch(self) -> None:
        """Close the bar of the epoch."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def row(self, row: dict[str, Any]) -> None:
        """One line per measurement: error, objective, SPEC loss, nc1, L_⊥/L."""
        self.nc1 = row.get("nc1")
        if not self.enabled:
            return

        test = f" test_acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
        objective = f" objective {row['objective']:.4g}" if "objective" in row else ""
        tqdm.write(
            f"{self.prefix}epoch {row['epoch']:>4} lr {row['lr']:.3g} "
            f"train_err {row['train_error']:.4f}"
            f"{test}{objective} loss {row['loss']:.4g} nc1 {row['nc1']:.4g} "
            f"L_perp/L {row['loss_perp_ratio']:.3g} ({row['wall_time']:.1f}s)",
            file=sys.stderr,
        )

    def flags(self, row: dict[str, Any]) -> None:
        """A warning line per split whose features are degenerate (``flags`` / ``test_flags``)."""
        if not self.warnings:
            return

        for key in ("flags", "test_flags"):
            if row.get(key):
                split = "test" if key == "test_flags" else "train"
                print(
                    f"{self.prefix}warning: epoch {row['epoch']}: {split} features degenerate "
                    f"({row[key]}): "
                    + "; ".join(FLAGS[f] for f in row[key].split(";") if f in FLAGS),
                    file=sys.stderr,
                )

    def message(self, text: str) -> None:
        """A free-form line (e.g. a warning about the features)."""
        if self.enabled:
            print(self.prefix + text, file=sys.stderr)


class TensorBoard:
    """Scalars of every measurement under ``RUN_DIR/tb`` (tags = the metrics.csv column names).

    Parameters
    ----------
    run_dir : Path
        The run directory.
    mode : {"auto", "true", "false"}
        ``auto`` writes when the tensorboard package is installed.
    enabled : bool
        False on processes that must not write.

    Raises
    ------
    ConfigError
        With ``mode="true"`` when tensorboard is not installed.
    """

    def __init__(self, run_dir: str | Path, mode: str = "auto", *, enabled: bool = True) -> None:
        self._writer: Any = None
        if not enabled or mode == "false":
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            if mode == "true":
                raise ConfigError(
                    "tensorboard='true' but the tensorboard package is not installed; "
                    "pip install 'ncmse[tensorboard]' or --set tensorboard=false"
                ) from exc
            return
        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def row(self, row: dict[str, Any]) -> None:
        """Add every numeric value of ``row`` at ``global_step = row["epoch"]``."""
        if self._writer is None:
            return
        for key, value in flatten_row(row).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._writer.add_scalar(key, value, global_step=row["epoch"])
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
