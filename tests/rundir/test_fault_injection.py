"""Fault injection: ``ncmse train`` and ``ncmse sweep`` SIGKILLed at many moments, then resumed,
end with exactly the results of an uninterrupted run (every column but ``wall_time``).

Kill points use the testing hook ``NCMSE_FAULT_AT=<site>:<n>`` of :mod:`ncmse.rundir.atomic` (the
process SIGKILLs itself at the n-th call of a write site, half-way through writing the
temporary file, or between the checkpoint rotation and the final rename): targeted ones inside
checkpoint, metrics, summary and config writes, plus kill points drawn at random (seeded) over
every write of the run. After each resume: no temporary file is left, the lock is free, and
while the resumed trainer ran nobody else could take the directory.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ncmse.errors import BusyError
from ncmse.rundir.lock import DirLock, holder, is_locked

pytestmark = pytest.mark.slow

EPOCHS = 4
SETS = [f"epochs={EPOCHS}", "checkpoint_every=1", "quiet=true", "report=false"]
#: calls of each write site in one uninterrupted run of EPOCHS epochs (tiny: a row per epoch)
SITE_CALLS = {
    "config.yaml": 2,
    "summary.json": EPOCHS + 2,
    "metrics.csv": EPOCHS,
    "metrics.jsonl": EPOCHS,
    "last.pt": EPOCHS,
    "last.pt:rotate": EPOCHS,
}
TARGETED = [
    "config.yaml:1",  # the very first file: nothing to resume, restart with --overwrite
    "summary.json:1",  # config written, no row, no checkpoint
    "metrics.csv:2",
    "metrics.jsonl:3",
    "last.pt:1",  # inside the first checkpoint write: no checkpoint yet
    "last.pt:3",  # inside a checkpoint write with last.pt and prev.pt present
    "last.pt:rotate:2",  # between last -> prev rotation and the rename of the new one
    "summary.json:6",  # the final "finished" summary
]
RANDOM_KILLS = 4


def _train_argv(*args: str) -> list[str]:
    sets = [x for s in SETS for x in ("--set", s)]
    return ["train", "--config", "tiny", *sets, *args]


def _child(argv: list[str], env: dict[str, str], log: str) -> None:
    """Body of a forked trainer: ``ncmse`` as from the command line, output to ``log``."""
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (pytest may have replaced them)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    from ncmse.cli import main

    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None):
    """Fork a trainer (the test process has torch imported already: no start-up cost)."""
    proc = mp.get_context("fork").Process(target=_child, args=(argv, env or {}, str(log)))
    proc.start()
    return proc


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    proc = _start(argv, log, env)
    proc.join(300)
    return proc.exitcode


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(fh)]


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _random_kills(seed: int = 12) -> list[str]:
    rng = random.Random(seed)
    sites = [f"{site}:{n}" for site, calls in SITE_CALLS.items() for n in range(1, calls + 1)]
    return rng.sample([s for s in sites if s not in TARGETED], RANDOM_KILLS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("reference")
    runs = {seed: root / f"s{seed}" for seed in (0, 1)}
    from ncmse.cli import main

    for seed, run in runs.items():  # in this process: later forks start warm (lazy imports)
        assert main(_train_argv("--set", f"seed={seed}", "--out", str(run))) == 0
    return runs


def _status(run: Path) -> str | None:
    """summary.json's status (None while it is missing or being replaced)."""
    try:
        return json.loads((run / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _kill_and_resume(run: Path, site: str, log: Path) -> dict[str, object]:
    """Kill a run at ``site``, then bring it to the end; returns what happened."""
    killed = _run(_train_argv("--out", str(run)), log, env={"NCMSE_FAULT_AT": site})
    outcome: dict[str, object] = {"site": site, "killed": killed == -signal.SIGKILL}
    if not (run / "config.yaml").is_file():
        refused = _run(["train", "--resume", str(run)], log)
        outcome["resume_refused_with_fix"] = refused == 2 and "--overwrite" in log.read_text()
        resumed = _start(_train_argv("--out", str(run), "--overwrite"), log)
    else:
        resumed = _start(["train", "--resume", str(run)], log)
    second_refused = True
    while resumed.is_alive():  # while it trains, nobody else may take the directory
        if is_locked(run):
            try:
                DirLock(run).acquire().release()
            except BusyError:
                pass
            else:  # granted: only legitimate once the trainer has finished and let go
                second_refused = second_refused and _status(run) == "finished"
        time.sleep(0.02)
    resumed.join()
    outcome["second_refused"] = second_refused
    outcome["resumed"] = resumed.exitcode == 0
    return outcome


def test_train_killed_at_many_points_resumes_to_identical_results(
    reference: dict[int, Path], tmp_path: Path
) -> None:
    kills = TARGETED + _random_kills()
    assert len(kills) >= 10
    expected = _rows(reference[0])
    equal = 0
    for i, site in enumerate(kills):
        run, log = tmp_path / f"k{i}", tmp_path / f"k{i}.log"
        out = _kill_and_resume(run, site, log)
        out["log"] = log.read_text()[-2000:]
        assert out["killed"], out
        assert out["resumed"], out
        assert out.get("resume_refused_with_fix", True), out
        assert out["second_refused"], out
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
        assert _rows(run) == expected, site
        assert _temps(run) == [], site
        assert not is_locked(run)
        equal += 1
    print(f"fault injection: {len(kills)} kills ({', '.join(kills)}), {equal} identical")


def _subprocess(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def _sweep_cmd(out: Path, *seeds: str) -> list[str]:
    return [sys.executable, "-m", "ncmse", "sweep", "--preset", "tiny", "--seeds", *seeds,
            "--set", *SETS, "--out", str(out), "--no-report"]  # fmt: skip


def test_sweep_killed_with_its_trainers_restarts_to_identical_results(
    reference: dict[int, Path], tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    first = _subprocess(_sweep_cmd(out, "0", "1"), env={"NCMSE_FAULT_AT": "last.pt:2"})
    assert first.returncode == 1, first.stdout + first.stderr  # both trainers killed
    second = _subprocess(_sweep_cmd(out, "0", "1"))
    assert second.returncode == 0, second.stdout + second.stderr
    runs = sorted((out / "runs").iterdir())
    for seed, run in enumerate(runs):
        assert _rows(run) == _rows(reference[seed]), run
        assert _temps(run) == []
    results = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    assert [r["status"] for r in results] == ["finished", "finished"]
    assert float(results[0]["lr"]) == 0.1 and results[0]["lr_final"] != ""


def test_sweep_killed_alone_leaves_an_orphan_trainer_that_is_never_doubled(
    reference: dict[int, Path], tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    sweep = subprocess.Popen(
        _sweep_cmd(out, "0"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline and run_dir is None:
        found = list((out / "runs").glob("*/config.yaml")) if (out / "runs").is_dir() else []
        run_dir = found[0].parent if found and is_locked(found[0].parent) else None
        time.sleep(0.02)
    assert run_dir is not None
    orphan = int(holder(run_dir)["pid"])
    os.kill(orphan, signal.SIGSTOP)  # keep the orphan mid-run while the next sweep plans
    sweep.kill()  # SIGKILL the sweep alone: its trainer keeps running
    sweep.wait()
    try:
        again = _subprocess(_sweep_cmd(out, "0"))
        assert again.returncode == 1 and f"in use by pid {orphan}" in again.stdout, again.stdout
    finally:
        os.kill(orphan, signal.SIGCONT)
    deadline = time.monotonic() + 120
    while is_locked(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_locked(run_dir), "the resumed orphan did not finish within 120 s"
    final = _subprocess(_sweep_cmd(out, "0"))
    assert final.returncode == 0, final.stdout + final.stderr
    log = (out / "logs" / f"{run_dir.name}.log").read_text()
    assert log.count("$ ") == 1  # one trainer ever started for this run: the orphan
    assert _rows(run_dir) == _rows(reference[0])
    assert _temps(run_dir) == []
