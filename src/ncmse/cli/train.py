"""``ncmse train``: train a network with the paper's protocol and measure collapse along the way.

Configuration: defaults ← ``--config`` (preset name or YAML path) ← ``--set key=value``.
Without arguments it runs the embedded default (digits, MLP, MSE) in about a minute on a CPU.
Multi-process: ``torchrun --nproc_per_node=K -m ncmse train ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from ncmse.cli.report import write_run_report_locked
from ncmse.errors import ConfigError

__all__ = ["add_arguments", "add_set_option", "run"]


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option of a command that trains: a config override,
    collected in ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``ncmse train``."""
    parser.add_argument(
        "--config",
        metavar="PRESET|PATH",
        help="preset name or YAML file (default: the digits MLP preset); see --list-presets",
    )
    add_set_option(
        parser, "override a config key (repeatable; values are YAML scalars, e.g. --set lr=0.01)"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory with local dataset copies (same as --set data_dir=DIR)",
    )
    parser.add_argument(
        "--out", metavar="RUN_DIR", help="run directory (default runs/<name>-<time>)"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with the configuration it "
        "was trained with; --set may then change only keys that do not change its numbers "
        "(device, num_threads, checkpoint_every, quiet, ...: recorded in summary.json)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an existing run directory"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument(
        "--list-presets", action="store_true", help="list the presets and what each is, then exit"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ncmse train``, then draw the run's report (``report: true``); returns the status."""
    from ncmse.train.config import list_presets, preset_description, resolve_config
    from ncmse.train.run import resume_config, run_training

    if args.list_presets:
        for name in list_presets():
            print(name)
            print(textwrap.fill(preset_description(name), width=100, initial_indent="    ",
                                subsequent_indent="    "))  # fmt: skip
        return 0
    if args.resume:
        if args.config or args.out or args.data_dir:
            raise ConfigError(
                "--resume takes the config and directory from RUN_DIR; drop "
                "--config/--out/--data-dir"
            )
        cfg, explicit = resume_config(args.resume, args.overrides)
        run_dir, summary = run_training(cfg, args.resume, resume=True, resume_set=explicit)
    else:
        overrides = list(args.overrides)
        if args.data_dir:
            overrides.insert(0, f"data_dir={args.data_dir}")
        cfg = resolve_config(args.config, overrides)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        run_dir, summary = run_training(cfg, args.out, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        if cfg.report:
            write_run_report_locked(run_dir)
        _print_summary(summary, run_dir)
    return 0


def _print_summary(summary: dict, run_dir: os.PathLike[str] | str) -> None:
    """Final values, the central-path fit and, last, the claims tally naming report.html."""
    from ncmse.verdicts.record import end_of_run_lines

    report = Path(run_dir) / "report.html"
    lines = end_of_run_lines(summary, report if report.is_file() else None)
    print("\n".join(lines), file=sys.stdout)
