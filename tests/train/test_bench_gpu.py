"""``benchmarks/bench_gpu.py --smoke``: every section runs on the CPU at a tiny size (not timed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_gpu_smoke_runs_every_section(tmp_path: Path) -> None:
    bench = _load_bench()
    try:
        assert bench.main(["--smoke", "--out", str(tmp_path), "--skip", "e2e"]) == 0
    finally:
        bench.SMOKE_OVERRIDES.clear()
    records = [json.loads(line) for line in (tmp_path / "bench_gpu.jsonl").read_text().splitlines()]
    errors = [r for r in records if "error" in r or "stopped" in r]
    assert not errors, errors
    sections = [r["section"] for r in records]
    for name in ("env", "train", "measure", "packed", "determinism", "fidelity", "vmap"):
        assert name in sections, name
    assert sections[-1] == "summary"
    train = {(r["preset"], r["variant"]) for r in records if r["section"] == "train"}
    assert ("paper-fashionmnist-resnet18-mse", "today") in train
    assert ("paper-cifar10-resnet18-mse", "today") in train
    checks = [r for r in records if r["section"] == "determinism"]
    assert len(checks) == 3  # fp32, the fast precision, packed vs alone
    for check in checks[:2]:  # on the CPU every path is the historical loop
        for step in check["steps"]:
            assert (
                step["eager_vs_eager"]["bitwise_equal"] and step["eager_vs_graph"]["bitwise_equal"]
            )
    assert all(c["bitwise_equal"] for c in checks[2]["per_run"])
    fidelity = [r for r in records if r["section"] == "fidelity"]
    assert len(fidelity) == 4 and all(r["epochs_done"] == 2 for r in fidelity)
    text = (tmp_path / "bench_gpu_summary.txt").read_text()
    assert "GPU-hours" in text and "speed-up" in text


def _fidelity(precision: str, cl: bool, seed: int, acc: float, nc1: float, perp: float) -> dict:
    record = {"section": "fidelity", "precision": precision, "channels_last": cl, "seed": seed}
    return record | {"epochs_done": 30, "train_accuracy": acc, "nc1": nc1, "loss_perp_ratio": perp}


def test_fidelity_verdicts_compare_means_with_the_reference_seed_spread() -> None:
    bench = _load_bench()
    ref = [_fidelity("fp32", False, 0, 0.90, 0.10, 0.010),
           _fidelity("fp32", False, 1, 0.92, 0.40, 0.020)]  # fmt: skip
    close = [_fidelity("tf32", True, 0, 0.91, 0.20, 0.012),
             _fidelity("tf32", True, 1, 0.915, 0.30, 0.018)]  # fmt: skip
    # accuracy off by 0.05 (spread 0.02); nc1 ×10 (spread log10 4 ≈ 0.6)
    far = [_fidelity("bf16", True, 0, 0.86, 2.0, 0.015),
           _fidelity("bf16", True, 1, 0.86, 2.0, 0.015)]  # fmt: skip
    lines = bench.fidelity_verdicts(ref + close + far)
    assert len(lines) == 2
    tf32, bf16 = lines
    assert tf32.startswith("fidelity tf32+cl vs fp32") and ": within the seed spread" in tf32
    assert "NOT within" in bf16
    assert "train_accuracy" in bf16 and "log10 nc1" in bf16
    acc, nc1, perp = bf16.split(": ", 1)[1].split("; ")
    assert acc.endswith("OUTSIDE") and nc1.endswith("OUTSIDE") and perp.endswith("within")
    nan = [_fidelity("bf16", True, 0, float("nan"), 0.2, 0.01)]
    assert "NOT within" in bench.fidelity_verdicts(ref + nan)[0]
    assert "no verdict" in bench.fidelity_verdicts(ref[:1] + close)[0]
