"""Flow time τ = Σ η over optimiser steps (SPEC §9): the schedule, and what a real run records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kill_after
from ncmse.train.config import resolve_config
from ncmse.train.loop import Trainer
from ncmse.train.run import train
from ncmse.train.schedule import epoch_learning_rates, flow_times, lr_milestones, steps_per_epoch

#: digits: 1200 training samples; batch 128 → 9 full batches and a partial one
SETS = ["quiet=true", "report=false", "tensorboard=false", "num_threads=1", "measure_test=false",
        "epochs=6", "lr_milestones=[0.34, 0.67]", "lr=0.07", "lr_gamma=0.3",
        "checkpoint_every=2"]  # fmt: skip


def independent_tau(cfg: dict, num_samples: int, epoch: int) -> float:
    """Σ η_k over every optimiser step up to the end of ``epoch``, one step at a time."""
    milestones = [max(1, round(f * cfg["epochs"])) for f in cfg["lr_milestones"]]
    tau = 0.0
    for e in range(1, epoch + 1):
        lr = cfg["lr"] * cfg["lr_gamma"] ** sum(m < e for m in milestones)
        for _ in range(math.ceil(num_samples / cfg["batch_size"])):
            tau += lr
    return tau


def test_schedule_matches_the_trainers_scheduler():
    cfg = resolve_config("tiny", [*SETS])
    rates = epoch_learning_rates(cfg.to_dict())
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, lr_milestones(cfg.epochs, cfg.lr_milestones), gamma=cfg.lr_gamma
    )
    used = []
    for _ in range(cfg.epochs):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates.tolist() == used  # bit for bit
    tau = flow_times(cfg.to_dict(), steps_per_epoch(1200, cfg.batch_size))
    assert tau[0] == 0.0
    assert tau[1:] == pytest.approx([independent_tau(cfg.to_dict(), 1200, e) for e in
                                     range(1, cfg.epochs + 1)], rel=1e-13)  # fmt: skip


def test_steps_per_epoch_keeps_or_drops_the_partial_batch():
    assert steps_per_epoch(1200, 128) == 10 and steps_per_epoch(1200, 128, drop_last=True) == 9
    assert steps_per_epoch(1280, 128) == steps_per_epoch(1280, 128, drop_last=True) == 10


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_real_run_records_tau_as_the_sum_of_lr_over_its_steps(tmp_path: Path):
    cfg = resolve_config("tiny", SETS)
    summary = train(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert [r["epoch"] for r in rows][-6:] == [1, 2, 3, 4, 5, 6]
    n = rows[-1]["num_samples"]
    assert n == 1200
    for row in rows:
        assert row["flow_time"] == pytest.approx(
            independent_tau(cfg.to_dict(), n, int(row["epoch"])), rel=1e-13
        )
    # a drop is in the run: τ grows by lr × 10 steps per epoch at each epoch's lr
    assert np.diff([r["flow_time"] for r in rows[-6:]]) == pytest.approx(
        [10 * r["lr"] for r in rows[-5:]]
    )
    assert all(f["clock"] == "lr_steps" for f in summary["central_path_fit"])
    csv_head = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "flow_time" in csv_head


def _train(args: list[str], crash_after: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ncmse", "train", *args]
    if crash_after is not None:  # killed (exit 3) right after epoch crash_after
        cmd = [sys.executable, kill_after.__file__, str(crash_after), "ncmse", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tau_continues_across_a_resume(tmp_path: Path):
    sets = [x for s in SETS for x in ("--set", s)]
    run = tmp_path / "killed"
    died = _train([*sets, "--config", "tiny", "--out", str(run)], crash_after=3)
    assert died.returncode == 3, died.stderr
    resumed = _train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    cfg = resolve_config("tiny", SETS).to_dict()
    for row in _rows(run):
        assert row["flow_time"] == pytest.approx(
            independent_tau(cfg, 1200, int(row["epoch"])), rel=1e-13
        )


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
def test_a_checkpoint_without_tau_gets_it_from_the_schedule(tmp_path: Path):
    """Checkpoints written before τ was stored: the trainer rebuilds it from its schedule."""
    cfg = resolve_config("tiny", SETS)
    first = Trainer.from_config(cfg, tmp_path / "run")
    for epoch in (1, 2, 3):
        first.end_epoch(epoch, first.lr, 0.0)
    state = first.state_dict()
    assert state["flow_time"] == pytest.approx(independent_tau(cfg.to_dict(), 1200, 3))
    del state["flow_time"]
    second = Trainer.from_config(cfg, tmp_path / "run")
    second.load_state_dict(state)
    assert second.state.flow_time == pytest.approx(independent_tau(cfg.to_dict(), 1200, 3),
                                                   rel=1e-13)  # fmt: skip
