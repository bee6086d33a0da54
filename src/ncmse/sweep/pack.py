"""``ncmse sweep --pack K``: runs that fit together are trained K at a time in one process.

Runs fit together when their resolved configs differ at most in ``seed``, ``lr`` and
``weight_decay`` (same preset content: dataset, model, loss, epochs, batch size, device ...).
Each pack is one ``python -m ncmse.cli.pack PACK.json`` process (:mod:`ncmse.train.packed`); every
run
of it still writes its own ordinary run directory, so the sweep's bookkeeping — states, skipping
finished runs, resuming killed ones, collecting — is the same as without packing. The pack file
is written when the job starts, with each run's state at that moment, so a job requeued after a
SLURM timeout resumes its runs from their checkpoints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncmse.errors import ConfigError
from ncmse.rundir.atomic import atomic_write_text
from ncmse.sweep.execute import TO_RUN, TrainFailedError, run_logged
from ncmse.sweep.grid import RunSpec
from ncmse.sweep.state import read_summary, run_state

__all__ = ["FREE_KEYS", "PackJob", "compatibility_key", "group_packs", "pack_job"]

#: config keys in which the runs of one pack may differ
FREE_KEYS: frozenset[str] = frozenset({"seed", "lr", "weight_decay"})


def compatibility_key(config: dict[str, Any]) -> str:
    """Runs with equal keys can share a pack: the config without :data:`FREE_KEYS`."""
    rest = {k: v for k, v in config.items() if k not in FREE_KEYS}
    return json.dumps(rest, sort_keys=True, default=str)


def group_packs(runs: Sequence[RunSpec], size: int) -> list[tuple[RunSpec, ...]]:
    """Split ``runs`` into packs of at most ``size`` compatible runs, in the sweep's order.

    Raises
    ------
    ConfigError
        If ``size`` < 1.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"--pack must be a positive integer, got {size!r}")
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(compatibility_key(run.config), []).append(run)
    packs = []
    for members in groups.values():
        packs += [tuple(members[i : i + size]) for i in range(0, len(members), size)]
    return packs


@dataclass
class PackJob:
    """Bring the runs of one pack to ``finished``; a picklable callable for submitit.

    Attributes
    ----------
    runs : tuple of RunSpec
        The runs (compatible, see :func:`compatibility_key`).
    log_path : Path
        File that receives the pack process's output (appended).
    pack_file : Path
        Where the pack description is written when the job starts.
    python : str
        Interpreter.
    env : dict
        Extra environment variables for the process.
    """

    runs: tuple[RunSpec, ...]
    log_path: Path
    pack_file: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)

    def members(self) -> list[dict[str, Any]]:
        """The runs that still need training, with their current state and config."""
        out = []
        for run in self.runs:
            state = run_state(run.run_dir)
            if state in TO_RUN:
                out.append({"run_dir": str(run.run_dir), "state": state, "config": run.config})
        return out

    def argv(self) -> list[str]:
        """The command of the pack process."""
        return [self.python, "-m", "ncmse.cli.pack", str(self.pack_file)]

    def execute(self) -> int:
        """Write the pack file, run the pack process (output appended to ``log_path``)."""
        members = self.members()
        if not members:
            return 0
        atomic_write_text(self.pack_file, json.dumps({"runs": members}, indent=2) + "\n")
        return run_logged(self.argv(), self.log_path, self.env, f"{len(members)} runs")

    def __call__(self) -> dict[str, Any]:
        """Entry point inside a submitit job: each run's final ``summary.json``.

        Raises
        ------
        TrainFailedError
            If the pack process fails.
        """
        code = self.execute()
        if code != 0:
            raise TrainFailedError(
                f"the pack of {', '.join(r.name for r in self.runs)} exited with status {code}; "
                f"see {self.log_path}"
            )
        return {run.name: read_summary(run.run_dir) or {} for run in self.runs}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue after a SLURM timeout/preemption; the next start resumes every run."""
        from submitit.helpers import DelayedSubmission  # optional: called by submitit only

        return DelayedSubmission(self, *args, **kwargs)


def pack_job(runs: tuple[RunSpec, ...], out: Path, python: str) -> PackJob:
    """The job of one pack of a sweep in ``out`` (log and pack file named after its first run)."""
    stem = f"pack-{runs[0].name}-k{len(runs)}"
    return PackJob(
        runs=runs,
        log_path=out / "logs" / f"{stem}.log",
        pack_file=out / "packs" / f"{stem}.json",
        python=python,
    )
