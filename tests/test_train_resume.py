"""Exact resume after a process dies mid-run (subprocesses, CPU, deterministic)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncmse.train import CRASH_ENV

SETS = [
    "quiet=true", "report=false", "tensorboard=false", "epochs=6", "num_threads=1",
    "model_kwargs={width: 128, depth: 2, batch_norm: true}",
]  # fmt: skip


def _train(args: list[str], crash_after: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_after is not None:
        env[CRASH_ENV] = str(crash_after)
    cmd = [sys.executable, "-m", "ncmse", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.pop("wall_time")
    return rows


def _sets(extra: list[str]) -> list[str]:
    return [x for s in [*SETS, *extra] for x in ("--set", s)]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(tmp_path: Path) -> None:
    sets = _sets(["checkpoint_every=2"])
    reference = tmp_path / "reference"
    assert _train([*sets, "--out", str(reference)]).returncode == 0

    run = tmp_path / "killed"
    died = _train([*sets, "--out", str(run)], crash_after=3)
    assert died.returncode == 3, died.stderr
    # with checkpoints every 2 epochs, epoch 3 was measured but not checkpointed (rows 0..3)
    assert [int(r["epoch"]) for r in _rows(run)] == [0, 1, 2, 3]
    resumed = _train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    assert _rows(run) == _rows(reference)
    assert len(_rows(run)) == 7  # epochs 0..6

    again = _train(["--resume", str(run)])  # a finished run just reports
    assert again.returncode == 0 and _rows(run) == _rows(reference)
