"""``ncmse report RUN_DIR [RUN_DIR …]``: per-run reports and, for several runs, a comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from ncmse.rundir.lock import LOCK_NAME, hold

__all__ = ["add_arguments", "run", "write_run_report_locked"]

_DEFAULT_OUT = Path("ncmse-report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``ncmse report`` to ``parser``."""
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories written by `ncmse train` or `ncmse ufm`",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder of the comparison of several runs (default: ./{_DEFAULT_OUT})",
    )
    parser.add_argument(
        "--embed",
        choices=("png", "svg"),
        default="png",
        help="embed figures in the HTML as base64 PNG (default) or inline SVG",
    )
    parser.add_argument(
        "--no-run-reports",
        action="store_true",
        help="with several runs, write only the comparison, not RUN_DIR/report.html of each",
    )


def write_run_report_locked(run_dir: str | Path, **options: object) -> Path:
    """``write_run_report`` while holding the run directory's lock: the page and figures are files
    of the run, and a run directory has one writer at a time (BusyError otherwise).

    A directory without ncmse's lock file was never locked by a writer: the report is written
    without creating one (a refused or failed report leaves nothing behind).
    """
    from ncmse.report import write_run_report

    if not (Path(run_dir) / LOCK_NAME).is_file():
        return write_run_report(run_dir, **options)
    with hold(run_dir, "run directory", wait=2.0):
        return write_run_report(run_dir, **options)


def run(args: argparse.Namespace) -> int:
    """Write the reports; print the path of each page written. Returns the exit status."""
    from ncmse.report import write_comparison_report

    run_dirs: list[Path] = list(args.run_dirs)
    several = len(run_dirs) > 1 or args.out is not None
    if not (several and args.no_run_reports):
        for run_dir in run_dirs:
            print(write_run_report_locked(run_dir, embed=args.embed))
    if several:
        out = args.out if args.out is not None else _DEFAULT_OUT
        print(write_comparison_report(run_dirs, out, embed=args.embed))
    return 0
