"""The ``ncmse`` dispatcher: builds the parser of the requested sub-command only."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ncmse.errors import explain

#: environment variable that turns every error into a full traceback (as ``--debug``)
_DEBUG_ENV = "NCMSE_DEBUG"

__all__ = ["COMMANDS", "build_parser", "main"]

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ncmse.cli.train", "train a classifier and measure collapse along the way"),
    "measure": ("ncmse.cli.measure", "measure collapse of a saved checkpoint"),
    "ufm": ("ncmse.cli.ufm", "simulate the unconstrained features model and its flows"),
    "report": ("ncmse.cli.report", "draw figures and an HTML report for run directories"),
    "sweep": ("ncmse.cli.sweep", "expand a grid of runs and run or submit them"),
    "controls": (
        "ncmse.cli.controls",
        "run the positive and negative controls of the claim verdicts",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported (keeps ``--help`` fast)."""
    parser = argparse.ArgumentParser(
        prog="ncmse",
        description="Measure, decompose and predict Neural Collapse under MSE loss.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of every error (also: {_DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ncmse ARGV``; returns the exit status (2 for a one-line error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get(_DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except Exception as exc:
        message = None if debug else explain(exc)
        if message is None:
            raise  # a genuine bug (or --debug): the traceback is the useful report
        print(f"ncmse {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ncmse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
