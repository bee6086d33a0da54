"""``benchmarks/bench_gpu.py --smoke``: every section runs on the CPU at a tiny size (not timed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


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
