"""Writing a run directory: :class:`RunWriter` (config.yaml, metrics.csv/jsonl, summary.json),
:func:`write_json` and the default directory name. Every write is atomic
(:mod:`ncmse.rundir.atomic`); every cell follows :mod:`ncmse.rundir.format`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ncmse.rundir.atomic import atomic_write_text
from ncmse.rundir.format import encode, rows_to_csv, to_json
from ncmse.rundir.reader import read_summary

__all__ = ["RunWriter", "default_run_dir", "update_summary", "write_json"]


def write_json(path: str | Path, value: Any) -> Path:
    """Atomically write ``value`` as indented strict JSON (the module's rule) to ``path``."""
    return atomic_write_text(Path(path), to_json(value, indent=2) + "\n")


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """``root/<name>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if that exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


class RunWriter:
    """Writes the files of one run directory; every write is atomic and visible at its call.

    Parameters
    ----------
    path : path
        The run directory (locked by :func:`ncmse.rundir.guard.lock_run_dir`).
    enabled : bool
        False on processes that must not write (DDP ranks ≠ 0): every method is then a no-op.

    Examples
    --------
    >>> import tempfile
    >>> w = RunWriter(tempfile.mkdtemp())
    >>> _ = w.write_rows([{"epoch": 1, "nc1": 0.5, "snr": [2.0, float("inf")]}])
    >>> (w.path / "metrics.csv").read_text()
    'epoch,nc1,snr_1,snr_2\\n1,0.5,2.0,inf\\n'
    >>> _ = w.write_summary({"kind": "train", "status": "running"})
    >>> w.update_summary(status="finished")["status"]
    'finished'
    """

    def __init__(self, path: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write_config(self, config: Mapping[str, Any]) -> None:
        """``config.yaml``: the resolved config, every key, in the given order."""
        if self.enabled:
            text = yaml.safe_dump(encode(dict(config)), sort_keys=False)
            atomic_write_text(self.path / "config.yaml", text)

    def write_rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        jsonl: bool = True,
        columns: Sequence[str] | None = None,
        name: str = "metrics",
    ) -> None:
        """``<name>.csv`` (and ``<name>.jsonl``) holding exactly ``rows`` (rewritten atomically).

        The CSV expands ``snr`` lists to ``snr_1..``; the JSONL keeps them as lists.
        """
        if not self.enabled:
            return
        atomic_write_text(self.path / f"{name}.csv", rows_to_csv(rows, columns))
        if jsonl:
            text = "".join(to_json(dict(r)) + "\n" for r in rows)
            atomic_write_text(self.path / f"{name}.jsonl", text)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Replace ``summary.json`` with ``summary``."""
        if self.enabled:
            write_json(self.path / "summary.json", dict(summary))

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``summary.json`` (created if absent); returns the new summary.

        This is the call for anything computed after a run (e.g. claim verdicts):
        ``RunWriter(run_dir).update_summary(claims={...})``.
        """
        summary = read_summary(self.path, strict=False) or {}
        summary.update(fields)
        self.write_summary(summary)
        return summary


def update_summary(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run_dir/summary.json``; see :meth:`RunWriter.update_summary`."""
    return RunWriter(run_dir).update_summary(**fields)
