"""``python -m ncmse.cli.pack PACK.json``: train the pack a sweep wrote (``ncmse sweep --pack K``).

The file holds ``{"runs": [{"run_dir", "state", "config"}, ...]}`` (:mod:`ncmse.sweep.pack`);
the runs are trained together by :func:`ncmse.packed.train_packed`, then each finished run's
report is drawn when its config asks for one, as ``ncmse train`` does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Returns 0 when every run finished or diverged (a result), 1 otherwise, 2 on bad input."""
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
    from ncmse.errors import NCMSEError
    from ncmse.packed import PackMember, train_packed

    print(f"ncmse pack: {len(runs)} runs in one process", file=sys.stderr)
    try:
        results = train_packed([PackMember(*r) for r in runs])
    except NCMSEError as exc:  # bad config, data missing, a run directory busy ...
        print(f"ncmse pack: {exc}", file=sys.stderr)
        return 2
    for (run_dir, _, _), result in zip(runs, results):
        if result.get("status") == "finished" and _wants_report(run_dir):
            from ncmse.cli.report import write_run_report_locked

            write_run_report_locked(run_dir)
    ok = all(r.get("status") in ("finished", "diverged") for r in results)
    return 0 if ok else 1


def _wants_report(run_dir: Path) -> bool:
    from ncmse.train import config_of_run

    return bool(config_of_run(run_dir).report)


if __name__ == "__main__":
    sys.exit(main())
