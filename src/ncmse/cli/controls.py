"""``ncmse controls``: run the positive and negative controls of the SPEC §7 verdicts.

Trains the default preset and its cross-entropy twin (positive controls: they collapse) and the
default preset with a learning rate 1000× too small, with 3 epochs and with frozen features
(negative controls: they do not), then prints the outcome of every claim per control
(:mod:`ncmse.verdicts.controls`). Exit status 0 when the controls separate (no negative control
holds a
trend claim), 1 when a negative control holds one, 2 for a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ncmse.cli.train import add_set_option
from ncmse.verdicts.controls import (
    CONTROLS,
    controls_separate,
    controls_table,
    run_controls,
    summary_lines,
)

__all__ = ["add_arguments", "run"]

_DEFAULT_OUT = Path("ncmse-controls")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``ncmse controls``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=_DEFAULT_OUT,
        metavar="DIR",
        help=f"parent directory of the control runs, one per control (default ./{_DEFAULT_OUT}; "
        "existing control runs there are replaced)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these controls: " + ", ".join(c.name for c in CONTROLS),
    )
    add_set_option(parser, "a config setting for every control run (e.g. --set device=cpu)")


def run(args: argparse.Namespace) -> int:
    """Train the controls, print the table; 0 when they separate, 1 when they do not."""

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run_controls(args.out, names=args.only, overrides=args.overrides, progress=progress)
    print(controls_table(results))
    for line in summary_lines(results):
        print(line)
    return 0 if controls_separate(results) else 1
