"""``python -m ncmse.cli.pack PACK.json``: train the pack a sweep wrote (``ncmse sweep --pack K``).

The file holds ``{"runs": [{"run_dir", "state", "config"}, ...]}`` (:mod:`ncmse.sweep.pack`);
the runs are trained together by :func:`ncmse.train.packed.train_packed`, then each finished run's
report is drawn when its config asks for one, as ``ncmse train`` does.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ncmse.cli.report import write_run_report_locked
from ncmse.errors import explain, sigterm_raises

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Returns 0 when every run finished or diverged (a result), 1 otherwise, 2 on bad input
    or an error of the environment (a full disk ...), 130 on Ctrl-C and 143 on SIGTERM (one line
    each, as ``ncmse train``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m ncmse.cli.pack PACK.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        data = json.loads(path.read_text())
        runs = [(Path(m["run_dir"]), str(m["state"]), m.get("config")) for m in data["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"ncmse pack: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    print(f"ncmse pack: {len(runs)} runs in one process", file=sys.stderr)
    try:
        with sigterm_raises(_Terminated):
            return _train_and_report(runs)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (a SLURM preemption, a killed sweep)
        terminated = isinstance(exc, _Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"ncmse pack: {what}; each run keeps its last checkpoint and resumes from it",
              file=sys.stderr)  # fmt: skip
        return 128 + signal.SIGTERM if terminated else 130
    except Exception as exc:  # as ncmse train: what the user can fix is one line, exit 2
        message = explain(exc)
        if message is None:
            raise  # a genuine bug: the traceback is the useful report
        print(f"ncmse pack: error: {message}", file=sys.stderr)
        return 2


def _train_and_report(runs: list[tuple[Path, str, dict | None]]) -> int:
    """Train the pack, then draw each finished run's report; the exit status of :func:`main`."""
    from ncmse.train.packed import PackMember, train_packed

    results = train_packed([PackMember(*r) for r in runs])
    for (run_dir, _, _), result in zip(runs, results):
        if result.get("status") == "finished" and _wants_report(run_dir):
            write_run_report_locked(run_dir)
    ok = all(r.get("status") in ("finished", "diverged") for r in results)
    return 0 if ok else 1


class _Terminated(KeyboardInterrupt):
    """SIGTERM received: stop where the runs are (each keeps its last checkpoint)."""


def _wants_report(run_dir: Path) -> bool:
    from ncmse.train.run import config_of_run

    return bool(config_of_run(run_dir).report)


if __name__ == "__main__":
    sys.exit(main())
