"""``ncmse measure CHECKPOINT``: re-measure a saved model.

Loads the config stored in the checkpoint, rebuilds data and model, measures every SPEC metric
at the run's λ (or ``--lam``) on the requested split(s), prints JSON and optionally writes it.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

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
    parser.add_argument("--json", dest="json_out", metavar="PATH", help="also write JSON here")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def measure_checkpoint(
    checkpoint: str,
    *,
    split: str = "train",
    lam: float | None = None,
    device: str = "auto",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Measure a checkpoint; returns ``{"epoch", "lam", "lam_source", "train": {...}, ...}``."""
    import dataclasses

    from ncmse.config import config_from_dict
    from ncmse.train import _resolve_device, build_components, load_checkpoint, measure_split

    ckpt = load_checkpoint(checkpoint)
    cfg = config_from_dict(ckpt["config"], where=f"the config stored in {checkpoint}")
    cfg = dataclasses.replace(cfg, device=device, lam=cfg.lam if lam is None else lam)
    comps = build_components(cfg, _resolve_device(cfg.device, 0))
    comps.model.load_state_dict(ckpt["model"])
    bundle = comps.bundle
    out: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "epoch": ckpt.get("epoch"),
        "lam": comps.loss.lam,
        "lam_source": comps.loss.lam_source,
    }
    splits = ("train", "test") if split == "both" else (split,)
    for name in splits:
        x, y = (
            (bundle.train_x, bundle.train_y) if name == "train" else (bundle.test_x, bundle.test_y)
        )
        out[name] = measure_split(
            comps.model,
            comps.loss,
            x.to(comps.device),
            y.to(comps.device),
            num_classes=bundle.num_classes,
            batch_size=batch_size or cfg.measure_batch_size,
            memory_budget_bytes=cfg.memory_budget_bytes,
        )
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``ncmse measure``; returns the exit status."""
    from ncmse.fileio import atomic_write_text

    result = measure_checkpoint(
        args.checkpoint,
        split=args.split,
        lam=args.lam,
        device=args.device,
        batch_size=args.batch_size,
    )
    text = json.dumps(_finite(result), indent=2, allow_nan=False)
    print(text)
    if args.json_out:
        from pathlib import Path

        atomic_write_text(Path(args.json_out), text + "\n")
    return 0
