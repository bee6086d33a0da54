"""Two gloo processes (torchrun) reproduce a one-process run on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SETS = [
    "quiet=true", "report=false", "tensorboard=false", "epochs=3", "num_threads=1",
    "batch_size=128", "measure_test=true",
]  # fmt: skip
EXACT = ("epoch", "num_samples", "num_classes", "balanced", "lr")
SKIP = ("wall_time", "nc4_method", "test_nc4_method")


def _run(tmp: Path, name: str, nproc: int) -> list[dict]:
    out = tmp / name
    sets = [x for s in SETS for x in ("--set", s)]
    train = ["-m", "ncmse", "train", "--config", "tiny", *sets, "--out", str(out)]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        cmd = [*launcher, "--standalone", *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _close(a: object, b: object, key: str) -> None:
    if isinstance(a, list):
        assert len(a) == len(b), key
        for x, y in zip(a, b):
            _close(x, y, key)
    elif key in EXACT or isinstance(a, (bool, str)):
        assert a == b, key
    else:
        assert a == pytest.approx(b, rel=1e-4, abs=1e-7), key


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    single = _run(tmp_path, "one", 1)
    double = _run(tmp_path, "two", 2)
    assert len(single) == len(double) == 4  # epochs 0..3
    for r1, r2 in zip(single, double):
        assert set(r1) == set(r2)
        assert r1["num_samples"] == 1200 and r1["test_num_samples"] == r2["test_num_samples"]
        for key in r1:
            if key not in SKIP:
                _close(r1[key], r2[key], key)
    # only rank 0 wrote files: a single summary and one set of rows
    assert (
        json.loads((tmp_path / "two" / "summary.json").read_text())["environment"]["world_size"]
        == 2
    )


DIVERGE_SCRIPT = """
import json, sys, torch
from ncmse.train.config import resolve_config
from ncmse.train.distributed import init_distributed, process_group
from ncmse.errors import DivergenceError
from ncmse.train.loop import Trainer
from ncmse.train.run import open_run_dir

out = sys.argv[1]
cfg = resolve_config("tiny", ["quiet=true", "report=false", "tensorboard=false", "epochs=2",
                              "num_threads=1", "batch_size=16", "measure_test=false"])
info = init_distributed(cfg)
with process_group(info):
    trainer = Trainer.from_config(cfg, open_run_dir(cfg, out, dist_info=info), info)
    inner, calls = trainer.step.criterion, [0]

    def poisoned(logits, y):  # NaN on rank 1 only, from its 3rd step of epoch 1 on
        calls[0] += 1
        value = inner(logits, y)
        return value * float("nan") if info.rank == 1 and calls[0] >= 3 else value

    trainer.step.criterion = poisoned
    try:
        trainer.fit()
        result = {"error": None}
    except DivergenceError as exc:
        result = {"error": str(exc)}
    result["calls"] = calls[0]
    with open(f"{out}/rank{info.rank}.json", "w") as fh:
        json.dump(result, fh)
"""


@pytest.mark.slow
def test_divergence_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGE_SCRIPT)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, str(script), str(out)], capture_output=True, text=True, timeout=180, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["error"] and r1["error"] and "epoch 1" in r0["error"]
    assert r0["calls"] == r1["calls"] < 20  # the same check point, long before the epoch's end
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
