"""``ncmse measure CHECKPOINT``: re-measure a saved model.

Loads the config stored in the checkpoint, rebuilds data and model, measures every SPEC metric
at the run's λ (or ``--lam``) on the requested split(s), prints JSON and optionally writes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ncmse.errors import BusyError, InputError
from ncmse.rundir.lock import hold

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``ncmse measure``."""
    parser.add_argument("checkpoint", help="RUN_DIR/checkpoints/last.pt (or RUN_DIR)")
    parser.add_argument(
        "--split", choices=("train", "test", "both"), default="train", help="split(s) to measure"
    )
    parser.add_argument("--lam", type=float, default=None, help="λ of the decomposition")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="measurement batch size")
    parser.add_argument(
        "--min-samples",
        type=int,
        default=None,
        metavar="M",
        help="measure only the classes with at least M samples in the split (default: every "
        "class must be present); the result records the classes and samples left out",
    )
    parser.add_argument("--json", dest="json_out", metavar="PATH", help="also write JSON here")


def run(args: argparse.Namespace) -> int:
    """Run ``ncmse measure``: print the JSON (and write it with ``--json``); returns the status."""
    # lazy here and below (as in every sub-command): `ncmse measure --help` stays fast
    from ncmse.rundir.format import to_json
    from ncmse.rundir.writer import write_json
    from ncmse.train.run import measure_checkpoint

    result = measure_checkpoint(
        args.checkpoint,
        split=args.split,
        lam=args.lam,
        device=args.device,
        batch_size=args.batch_size,
        min_samples=args.min_samples,
    )
    print(to_json(result, indent=2))
    if args.json_out:
        write_json(args.json_out, result)
    if "claims" in result:
        from ncmse.verdicts.claims import format_tally

        print(format_tally(result["claims"]) + _store_verdicts(result, args.checkpoint),
              file=sys.stderr)  # fmt: skip
    return 0


def _store_verdicts(result: dict, checkpoint: str) -> str:
    """Recomputed verdicts into RUN_DIR/summary.json when the checkpoint is this run's own
    (:func:`_not_this_runs`) and no other process writes the directory; returns what was done,
    for the console line (nothing stored: why)."""
    from ncmse.rundir.writer import update_summary

    path = Path(checkpoint)
    run_dir = path if path.is_dir() else (path.parent.parent if path.parent.name == "checkpoints"
                                          else None)  # fmt: skip
    if run_dir is None or not (run_dir / "summary.json").is_file():
        return ""
    last = run_dir / "checkpoints" / "last.pt"
    if Path(result["checkpoint"]).resolve() != last.resolve():  # prev.pt, asked for or fallen back
        return (
            f" (not stored in summary.json: measured from {result['checkpoint']}, not the run's "
            "last checkpoint, whose verdicts the summary holds)"
        )
    why = _not_this_runs(result, run_dir)
    if why is not None:
        return f" (not stored in summary.json: {why})"
    try:
        with hold(run_dir, "run directory"):
            update_summary(run_dir, claims=result["claims"],
                           central_path_fit=result["central_path_fit"])  # fmt: skip
    except BusyError as exc:
        return f" (not stored in summary.json: {exc})"
    except OSError as exc:  # a read-only run directory: the result above stands, nothing stored
        return (
            f" (nothing stored: cannot write in the run directory {str(run_dir)!r} "
            f"({exc.strerror or exc}))"
        )
    return f" (stored in {run_dir / 'summary.json'})"


def _not_this_runs(result: dict, run_dir: Path) -> str | None:
    """Why the checkpoint's verdicts are not the run's to store, or None when they are.

    They are when the checkpoint carries the run id of the run's summary.json (a checkpoint
    copied from another run does not) and it holds the run's rows: its epoch and its rows' last
    epoch are the epoch of the run's last row (a run killed between two checkpoints has rows
    the checkpoint lacks).
    """
    from ncmse.rundir.format import number
    from ncmse.rundir.reader import order_rows, read_rows, read_summary

    ours = (read_summary(run_dir, strict=False) or {}).get("run_id")
    theirs = result.get("run_id")
    if not ours or not theirs:
        return (
            "the run or its checkpoint has no run id (written by an older ncmse), so the "
            "checkpoint cannot be verified as this run's"
        )
    if ours != theirs:
        return f"the checkpoint belongs to another run (run id {theirs}, this run's is {ours})"
    metrics = next((run_dir / n for n in ("metrics.csv", "metrics.jsonl")
                    if (run_dir / n).is_file()), None)  # fmt: skip
    try:
        rows = order_rows(read_rows(metrics), source=repr(str(metrics))) if metrics else []
    except InputError as exc:
        return f"the run's rows cannot be read ({exc})"
    last = int(number(rows[-1]["epoch"])) if rows else None
    if result.get("epoch") != last or result.get("rows_to_epoch") != last:
        return (
            f"the checkpoint is at epoch {result.get('epoch')} but the run's rows go to epoch "
            f"{last} (killed between two checkpoints?); ncmse train --resume {run_dir} brings "
            "them together"
        )
    return None
