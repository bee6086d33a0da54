"""Command line: ``ncmse train | measure | ufm | report | sweep`` (every front-end lives here).

Each sub-command module exposes ``add_arguments(parser)`` — argparse only, no torch — and
``run(args) -> int``, which imports its implementation. ``ncmse --help`` and argument errors
therefore never import torch.
"""

from ncmse.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
