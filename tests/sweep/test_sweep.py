"""Tests of ncmse.sweep: grid expansion, run states, dry run, execution, lr selection.

Execution tests use a fake interpreter (a small script standing in for ``python -m ncmse train``)
that writes run directories like the trainer does, so the sweep logic is exercised in
milliseconds; one test runs the real trainer on the ``tiny`` preset end to end.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ncmse.cli import main
from ncmse.errors import BusyError, ConfigError
from ncmse.rundir.lock import is_locked
from ncmse.sweep import SweepOptions, SweepSpec, expand, run_sweep
from ncmse.sweep.collect import RunResult, collect, group_results, select_lr
from ncmse.sweep.core import SweepLock, SweepTerminated, plan
from ncmse.sweep.execute import SlurmOptions, make_executor, parse_time_minutes, train_argv
from ncmse.sweep.grid import PAPER_LR_GRID, load_sweep_file, lr_grid, run_name, value_token
from ncmse.sweep.state import run_state
from ncmse.train.config import resolve_config

PRESET = "digits-mlp-mse"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

FAKE_TRAINER = r'''#!{python}
"""Stands in for `python -m ncmse train`: writes a run directory as the trainer does."""
import json, math, os, sys
from pathlib import Path
import yaml

args = sys.argv[1:]
assert args[:3] == ["-m", "ncmse", "train"], args
with open(os.environ["FAKE_CALLS"], "a") as fh:
    fh.write(json.dumps(args[3:]) + "\n")
if "--resume" in args:
    run_dir, resumed = Path(args[args.index("--resume") + 1]), True
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
else:
    run_dir, resumed = Path(args[args.index("--out") + 1]), False
    if run_dir.exists() and any(run_dir.iterdir()) and "--overwrite" not in args:
        sys.exit(2)
    cfg = json.loads(Path(os.environ["FAKE_CONFIGS"]).read_text())[str(run_dir)]
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
(run_dir / "checkpoints").mkdir(exist_ok=True)
(run_dir / "checkpoints" / "last.pt").write_bytes(b"fake")
summary = {{"kind": "train", "status": "running", "seed": cfg["seed"]}}
if os.environ.get("FAKE_SLEEP"):
    (run_dir / "summary.json").write_text(json.dumps(summary))
    Path(os.environ["FAKE_SLEEP"]).write_text(str(os.getpid()))
    import time
    time.sleep(60)
if os.environ.get("FAKE_CRASH") == "1" and not resumed:
    (run_dir / "summary.json").write_text(json.dumps(summary))
    sys.exit(3)
acc = 0.9 - 0.1 * abs(math.log10(cfg["lr"] / 0.05)) + 0.001 * cfg["seed"]
if cfg["lr"] >= 1.0:
    summary["status"] = "diverged"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    sys.exit(2)
summary.update(status="finished", tpt_epoch=2, final={{
    "epoch": cfg["epochs"], "train_error": 0.0, "test_accuracy": acc, "nc1": 0.01 * cfg["lr"],
    "loss": 0.1, "loss_perp": 0.001, "loss_perp_ratio": 0.01}})
(run_dir / "summary.json").write_text(json.dumps(summary))
'''


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake interpreter; returns (path, function reading the recorded calls)."""
    script = tmp_path / "fake_python"
    script.write_text(FAKE_TRAINER.format(python=sys.executable))
    script.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    calls.touch()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_CONFIGS", str(tmp_path / "configs.json"))
    monkeypatch.delenv("FAKE_CRASH", raising=False)

    def read_calls() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()]

    return script, read_calls


def _register(runs, tmp_path: Path) -> None:
    """Tell the fake trainer the config of each planned run."""
    (tmp_path / "configs.json").write_text(json.dumps({str(r.run_dir): r.config for r in runs}))


def _fake_run_dir(run, status: str | None, *, checkpoint: bool, config: dict | None = None) -> None:
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(config or run.config))
    if status is not None:
        final = {"test_accuracy": 0.5, "nc1": 1.0} if status == "finished" else None
        (run.run_dir / "summary.json").write_text(json.dumps({"status": status, "final": final}))
    if checkpoint:
        (run.run_dir / "checkpoints").mkdir()
        (run.run_dir / "checkpoints" / "last.pt").write_bytes(b"x")


def _spec(**kw) -> SweepSpec:
    base = {"presets": (PRESET,), "overrides": ("epochs=3",)}
    return SweepSpec(**{**base, **kw})


# --------------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------------


def test_paper_lr_grid_is_25_log_spaced_values() -> None:
    grid = np.array(PAPER_LR_GRID)
    assert grid.size == 25 and grid[0] == 1e-4 and grid[-1] == 0.25
    ratios = grid[1:] / grid[:-1]
    np.testing.assert_allclose(ratios, 2500 ** (1 / 24), rtol=1e-3)
    assert lr_grid("paper") == PAPER_LR_GRID
    assert lr_grid("1e-3:0.1:3") == (0.001, 0.01, 0.1)
    for bad in ("fast", "1:2", "0.1:0.01:3", "1e-3:0.1:0"):
        with pytest.raises(ConfigError, match="lr-grid"):
            lr_grid(bad)


def test_run_names_are_deterministic_and_injective() -> None:
    assert run_name("fashion-cnn-mse", 0, 0.05, 5e-4) == "fashion-cnn-mse-s0-lr0.05-wd0.0005"
    assert run_name("/x/my-grid.yaml", 3, 1e-5, 0.0) == "my-grid-s3-lr1e-05-wd0.0"
    tokens = {value_token(v) for v in PAPER_LR_GRID}
    assert len(tokens) == 25
    assert all(float(t) == v for t, v in zip(map(value_token, PAPER_LR_GRID), PAPER_LR_GRID))


def test_expand_is_the_grid_product_in_seed_major_order(tmp_path: Path) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump({"name": "custom", "dataset": "digits", "model": "mlp"}))
    spec = _spec(presets=(PRESET, str(custom)), seeds=(0, 1), lrs=(0.01, 0.05), wds=(5e-4, 0.0))
    runs = expand(spec, tmp_path / "sw")
    assert len(runs) == 16 and len({r.name for r in runs}) == 16
    coords = {(Path(r.preset).stem, r.seed, r.lr, r.weight_decay) for r in runs}
    assert coords == {
        (p, s, lr, wd)
        for p in (PRESET, "custom")
        for s in (0, 1)
        for lr in (0.01, 0.05)
        for wd in (5e-4, 0.0)
    }
    assert [r.seed for r in runs] == [0] * 8 + [1] * 8
    assert [r.name for r in expand(spec, tmp_path / "sw")] == [r.name for r in runs]
    for r in runs:
        assert r.run_dir == (tmp_path / "sw" / "runs" / r.name).resolve()
        assert (r.config["seed"], r.config["lr"], r.config["weight_decay"]) == (
            r.seed,
            r.lr,
            r.weight_decay,
        )
        assert r.config["epochs"] == 3 and r.overrides[0] == "epochs=3"
        assert resolve_config(r.preset, r.overrides).to_dict() == r.config


def test_expand_keeps_preset_values_when_no_axis_is_given(tmp_path: Path) -> None:
    (run,) = expand(SweepSpec(presets=(PRESET,)), tmp_path)
    cfg = resolve_config(PRESET)
    assert (run.seed, run.lr, run.weight_decay) == (cfg.seed, cfg.lr, cfg.weight_decay)
    assert run.name == run_name(PRESET, cfg.seed, cfg.lr, cfg.weight_decay)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (SweepSpec(presets=()), "no preset"),
        (_spec(lrs=(0.1,), overrides=("lr=0.2",)), "conflicts with --lr"),
        (_spec(overrides=("name=x",)), "name"),
        (_spec(presets=("no-such-preset",)), "unknown preset"),
        (_spec(lrs=(-0.1,)), "lr"),
        (_spec(overrides=("epoch=3",)), "Did you mean 'epochs'"),
        (_spec(select_lr=True, overrides=("measure_test=false",)), "measure_test"),
    ],
)
def test_expand_rejects_bad_sweeps(spec: SweepSpec, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        expand(spec, tmp_path)


def test_sweep_file_and_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "presets": [PRESET],
                "seeds": [0, 1],
                "lr": "1e-3:0.1:3",
                "set": {"epochs": 3, "model_kwargs": {"width": 16}},
                "out": str(tmp_path / "sw"),
                "slurm": {"partition": "gpu", "time": "2:00:00"},
            }
        )
    )
    loaded = load_sweep_file(path)
    assert loaded["lrs"] == (0.001, 0.01, 0.1) and loaded["select_lr"] is True
    assert loaded["overrides"] == ("epochs=3", 'model_kwargs={"width": 16}')
    assert main(["sweep", "-f", str(path), "--seeds", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    wd = resolve_config(PRESET).weight_decay
    assert "3 runs: 3 new" in out and "-s0-" not in out
    assert run_name(PRESET, 5, 0.01, wd) in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("presets: [x]\nseed: [1]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep_file(bad)


# --------------------------------------------------------------------------------------------
# run states, commands, dry run
# --------------------------------------------------------------------------------------------


def test_run_state_of_fake_run_dirs(tmp_path: Path) -> None:
    runs = expand(_spec(seeds=(0, 1, 2, 3, 4, 5)), tmp_path)
    assert run_state(runs[0].run_dir, runs[0].config) == "new"
    _fake_run_dir(runs[1], "finished", checkpoint=True)
    _fake_run_dir(runs[2], "running", checkpoint=True)
    _fake_run_dir(runs[3], "running", checkpoint=False)
    _fake_run_dir(runs[4], "diverged", checkpoint=True)
    _fake_run_dir(runs[5], "finished", checkpoint=True, config={**runs[5].config, "epochs": 7})
    states = [run_state(r.run_dir, r.config) for r in runs]
    assert states == ["new", "done", "resume", "restart", "diverged", "mismatch"]
    quiet = {**runs[1].config, "quiet": True, "device": "cpu"}  # run control: not a mismatch
    (runs[1].run_dir / "config.yaml").write_text(yaml.safe_dump(quiet))
    assert run_state(runs[1].run_dir, runs[1].config) == "done"


def test_train_argv_per_state(tmp_path: Path) -> None:
    (run,) = expand(_spec(), tmp_path)
    new = train_argv(run, "new", python="py")
    assert new[:5] == ["py", "-m", "ncmse", "train", "--config"]
    assert new[-2:] == ["--out", str(run.run_dir)]
    assert new.count("--set") == len(run.overrides)
    assert train_argv(run, "restart", python="py")[-1] == "--overwrite"
    assert train_argv(run, "resume", python="py") == [
        "py", "-m", "ncmse", "train", "--resume", str(run.run_dir)
    ]  # fmt: skip
    multi = train_argv(run, "new", python="py", gpus=4)
    assert multi[:6] == ["py", "-m", "torch.distributed.run", "--standalone",
                         "--nproc_per_node=4", "-m"]  # fmt: skip
    with pytest.raises(ValueError):
        train_argv(run, "done")


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sw"
    runs = expand(_spec(seeds=(0, 1, 2)), out)
    _fake_run_dir(runs[1], "finished", checkpoint=True)
    _fake_run_dir(runs[2], "running", checkpoint=True)
    argv = ["sweep", "--preset", PRESET, "--seeds", "0", "1", "2", "--set", "epochs=3"]
    code = main([*argv, "--out", str(out), "--dry-run", "--print-commands"])
    assert code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == ["run", "preset", "seed", "lr", "wd", "state"]
    rows = [line.split() for line in lines[2:5]]
    assert [(r[0], r[2], r[-1]) for r in rows] == [
        (runs[0].name, "0", "new"),
        (runs[1].name, "1", "done"),
        (runs[2].name, "2", "resume"),
    ]
    assert "3 runs: 1 new, 1 done, 1 resume" in text
    assert f"--resume {runs[2].run_dir}" in text and f"--out {runs[0].run_dir}" in text
    assert not (out / "sweep.json").exists() and not (out / "logs").exists()


# --------------------------------------------------------------------------------------------
# execution with the fake trainer
# --------------------------------------------------------------------------------------------


def test_local_sweep_survives_crashes_resumes_and_selects_lr(
    tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script, calls = fake
    out = tmp_path / "sw"
    spec = _spec(seeds=(0, 1), lrs=(0.01, 0.05, 0.2, 2.0), select_lr=True)
    runs = expand(spec, out)
    _register(runs, tmp_path)
    options = SweepOptions(out=out, python=str(script))

    monkeypatch.setenv("FAKE_CRASH", "1")  # every run is killed after its first checkpoint
    assert run_sweep(spec, options) == 1
    assert len(calls()) == 8 and all("--out" in c for c in calls())
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["outcome"] for r in manifest["runs"]] == ["failed"] * 8
    assert all((out / "logs" / f"{r.name}.log").is_file() for r in runs)

    monkeypatch.delenv("FAKE_CRASH")
    assert [p.state for p in plan(spec, out)] == ["resume"] * 8
    assert run_sweep(spec, options) == 0  # lr 2.0 diverges: a result, not a failure
    assert all(c[0] == "--resume" for c in calls()[8:]) and len(calls()) == 16
    manifest = json.loads((out / "sweep.json").read_text())
    outcomes = {r["lr"]: r["outcome"] for r in manifest["runs"]}
    assert outcomes == {0.01: "finished", 0.05: "finished", 0.2: "finished", 2.0: "diverged"}
    selection = json.loads((out / "lr_selection.json").read_text())["selections"]
    assert len(selection) == 1 and selection[0]["best_lr"] == 0.05 and selection[0]["complete"]
    expected = 1 - np.mean([0.9, 0.901])
    assert selection[0]["best_test_error"] == pytest.approx(expected)
    assert "selected learning rates" in capsys.readouterr().out

    assert run_sweep(spec, options) == 0  # everything done or diverged: nothing runs
    assert len(calls()) == 16
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 9 and csv_lines[0].startswith("name,preset,seed,lr")


def test_restart_uses_overwrite_and_mismatch_is_refused(tmp_path: Path, fake) -> None:
    script, calls = fake
    out = tmp_path / "sw"
    spec = _spec(seeds=(0, 1))
    runs = expand(spec, out)
    _register(runs, tmp_path)
    _fake_run_dir(runs[0], "running", checkpoint=False)
    assert run_sweep(spec, SweepOptions(out=out, python=str(script))) == 0
    assert calls()[0][-1] == "--overwrite" and "--overwrite" not in calls()[1]
    other = _spec(seeds=(0, 1), overrides=("epochs=4",))
    with pytest.raises(ConfigError, match="epochs"):
        run_sweep(other, SweepOptions(out=out, python=str(script)))


def test_sigterm_stops_the_running_training_and_writes_the_manifest(
    tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, calls = fake
    out = tmp_path / "sw"
    spec = _spec(seeds=(0, 1))
    runs = expand(spec, out)
    _register(runs, tmp_path)
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("FAKE_SLEEP", str(pid_file))

    def terminate_when_training() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_training, daemon=True).start()
    with pytest.raises(SweepTerminated):
        run_sweep(spec, SweepOptions(out=out, python=str(script)))
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and reaped by the sweep
    assert len(calls()) == 1  # the second run never started
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["running", "missing"]
    assert not is_locked(out, ".sweep.lock")
    assert [p.state for p in plan(spec, out)] == ["resume", "new"]


def test_a_run_held_by_another_process_is_skipped_never_trained_twice(
    tmp_path: Path, fake, capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed sweep's trainer keeps running (and holding its run directory): the next sweep
    must not start a second trainer on that directory."""
    script, calls = fake
    out = tmp_path / "sw"
    spec = _spec(seeds=(0, 1))
    runs = expand(spec, out)
    _register(runs, tmp_path)
    _fake_run_dir(runs[0], "running", checkpoint=True)
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ncmse.rundir.lock import DirLock\n"
         "lock = DirLock(sys.argv[1], 'run directory').acquire()\nprint('locked', flush=True)\n"
         "time.sleep(60)", str(runs[0].run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert orphan.stdout.readline().strip() == "locked"
        assert [p.state for p in plan(spec, out)] == ["busy", "new"]
        assert run_sweep(spec, SweepOptions(out=out, python=str(script))) == 1
        printed = capsys.readouterr().out
        assert f"in use by pid {orphan.pid}" in printed and "run the sweep again" in printed
        assert [c[-1] for c in calls()] == [str(runs[1].run_dir)]  # only the free run trained
        manifest = json.loads((out / "sweep.json").read_text())
        assert [r["outcome"] for r in manifest["runs"]] == ["busy", "finished"]
    finally:
        orphan.kill()
        orphan.wait()
    assert [p.state for p in plan(spec, out)] == ["resume", "done"]


def test_submitit_local_and_debug_executors(tmp_path: Path, fake) -> None:
    pytest.importorskip("submitit")
    script, calls = fake
    spec = _spec(seeds=(0, 1))
    for executor, out in (("local", tmp_path / "a"), ("debug", tmp_path / "b")):
        runs = expand(spec, out)
        _register(runs[:1] if executor == "local" else runs, tmp_path)
        # each LocalExecutor job imports torch: one run keeps the test short
        local_spec = _spec(seeds=(0,)) if executor == "local" else spec
        options = SweepOptions(
            out=out,
            executor=executor,
            slurm=SlurmOptions(gpus=0, time_min=5, parallel=2),
            python=str(script),
        )
        assert run_sweep(local_spec, options) == 0
        manifest = json.loads((out / "sweep.json").read_text())
        assert {r["outcome"] for r in manifest["runs"]} == {"finished"}
        assert all(r["job_id"] for r in manifest["runs"])
        assert any((out / "submitit").iterdir())
    assert len(calls()) == 3


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$(dirname "$0")/job_$(ls "$(dirname "$0")" | grep -c '^job_').sbatch"
echo "Submitted batch job 4242"
"""


def test_slurm_submission_writes_the_sbatch_options(
    tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit")
    script, calls = fake
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", "#!/bin/sh\nexit 0\n"), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "sw"
    argv = ["sweep", "--preset", PRESET, "--seeds", "0", "1", "--set", "epochs=3"]
    argv += ["--out", str(out), "--executor", "slurm", "--partition", "gpu", "--gpus", "2"]
    argv += ["--time", "1-02:00:00", "--mem-gb", "64", "--slurm-extra", "constraint=a100"]
    assert main(argv) == 0
    (script_file,) = bin_dir.glob("job_*.sbatch")  # one job array for both runs
    sbatch = script_file.read_text()
    for option in ("--partition=gpu", "--gpus-per-node=2", "--time=1560", "--mem=64GB",
                   "--constraint=a100", "--array=0-1", "--cpus-per-task=16"):  # fmt: skip
        assert f"#SBATCH {option}" in sbatch, option
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["outcome"] for r in manifest["runs"]] == ["submitted", "submitted"]
    assert [r["job_id"] for r in manifest["runs"]] == ["4242_0", "4242_1"]
    assert calls() == []  # nothing ran here
    assert "submitted as job 4242_0" in capsys.readouterr().out


def test_missing_submitit_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match="pip install"):
        make_executor("slurm", tmp_path, SlurmOptions(), "x")


@pytest.mark.parametrize(
    ("text", "minutes"), [("90", 90), ("1:30:00", 90), ("45:30", 46), ("2-00:00:00", 2880)]
)
def test_parse_time_minutes(text: str, minutes: int) -> None:
    assert parse_time_minutes(text) == minutes


def test_parse_time_rejects_garbage() -> None:
    for bad in ("1h", "0", "1-2-3", "::"):
        with pytest.raises(ConfigError, match="--time"):
            parse_time_minutes(bad)


def test_lock_refuses_a_live_sweep_and_is_free_once_it_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from ncmse.sweep.core import SweepLock\nlock = SweepLock(Path(sys.argv[1])).__enter__()\n"
         "print('locked', flush=True)\ntime.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=f"another ncmse sweep.*pid {holder.pid}"):
            with SweepLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with SweepLock(tmp_path):  # SIGKILLed holder: free at once, nothing to delete
        assert json.loads((tmp_path / ".sweep.lock").read_text())["pid"] == os.getpid()
    assert not is_locked(tmp_path, ".sweep.lock")


def _race(root: str, barrier, wins, index: int, workers: int, trials: int) -> None:
    from ncmse.errors import NCMSEError

    for trial in range(trials):
        lock = SweepLock(Path(root) / f"t{trial}")
        barrier.wait()
        try:
            lock.__enter__()
        except NCMSEError:
            got = False
        else:
            got = True
            wins[trial * workers + index] = 1
        barrier.wait()  # all have tried while the winner holds it
        if got:
            lock.__exit__(None, None, None)


def test_sweep_lock_race_has_exactly_one_winner(tmp_path: Path) -> None:
    import multiprocessing as mp

    workers, trials = 4, 100
    ctx = mp.get_context("fork")
    barrier, wins = ctx.Barrier(workers), ctx.Array("b", workers * trials, lock=False)
    for t in range(trials):
        (tmp_path / f"t{t}").mkdir()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, wins, i, workers, trials))
             for i in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert [sum(wins[t * workers : (t + 1) * workers]) for t in range(trials)] == [1] * trials


# --------------------------------------------------------------------------------------------
# lr selection
# --------------------------------------------------------------------------------------------


def test_results_csv_lr_is_the_configured_value_and_the_decayed_one_is_lr_final(
    tmp_path: Path,
) -> None:
    import csv
    import io

    from ncmse.sweep.core import _results_csv

    (run,) = expand(_spec(seeds=(0,), lrs=(0.05,)), tmp_path)
    result = RunResult(run, "finished", {"epoch": 350, "lr": 0.0005, "test_accuracy": 0.9})
    (row,) = csv.DictReader(io.StringIO(_results_csv([result])))
    assert float(row["lr"]) == 0.05 and float(row["lr_final"]) == 0.0005
    assert row["test_accuracy"] == "0.9" and row["epoch"] == "350"


def test_select_lr_mean_over_seeds_diverged_and_ties(tmp_path: Path) -> None:
    runs = expand(_spec(seeds=(0, 1), lrs=(0.01, 0.02, 0.03), wds=(0.0, 5e-4)), tmp_path)
    acc = {0.01: (0.80, 0.90), 0.02: (0.86, 0.84), 0.03: (0.99, 0.99)}
    results = []
    for r in runs:
        if r.lr == 0.03 and r.seed == 1:  # one diverged seed rules the lr out
            results.append(RunResult(r, "diverged", {}))
        elif r.weight_decay == 5e-4 and r.lr == 0.01 and r.seed == 1:  # still running
            results.append(RunResult(r, "running", {}))
        else:
            results.append(RunResult(r, "finished", {"test_accuracy": acc[r.lr][r.seed]}))
    selections = {s["weight_decay"]: s for s in select_lr(group_results(results))}
    assert selections[0.0]["best_lr"] == 0.01  # tie at 0.15 with 0.02: smaller lr
    assert selections[0.0]["best_test_error"] == pytest.approx(0.15)
    assert selections[0.0]["complete"] is True
    assert selections[5e-4]["best_lr"] == 0.02  # 0.01 has only seed 0 (error 0.2) so far
    assert selections[5e-4]["complete"] is False
    cands = {c["lr"]: c for c in selections[5e-4]["candidates"]}
    assert (cands[0.01]["finished"], cands[0.01]["planned"]) == (1, 2)
    cands = {c["lr"]: c for c in selections[0.0]["candidates"]}
    assert cands[0.03]["mean_test_error"] == math.inf and cands[0.03]["diverged"] == 1


def test_groups_report_mean_and_std(tmp_path: Path) -> None:
    runs = expand(_spec(seeds=(0, 1, 2)), tmp_path)
    finals = [
        {"test_accuracy": a, "nc1": n, "loss_perp": p, "loss": 1.0}
        for a, n, p in [(0.8, 1.0, 0.1), (0.9, 2.0, 0.2), (0.85, 3.0, 0.3)]
    ]
    (group,) = group_results([RunResult(r, "finished", f) for r, f in zip(runs, finals)])
    assert group.test_accuracy[0] == pytest.approx(0.85)
    assert group.test_accuracy[1] == pytest.approx(0.05)
    assert group.nc1 == pytest.approx((2.0, 1.0))
    assert group.perp_ratio == pytest.approx((0.2, 0.1))
    assert math.isnan(collect(runs)[0].test_error)


# --------------------------------------------------------------------------------------------
# the real trainer
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_tiny_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    argv = ["sweep", "--preset", "tiny", "--seeds", "0", "1", "--out", str(out), "--no-report"]
    assert main(argv) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    for entry in manifest["runs"]:
        summary = json.loads((Path(entry["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["seed"] == entry["seed"]
        assert 0.0 <= entry["final"]["test_accuracy"] <= 1.0
    (group,) = manifest["groups"]
    assert group["finished"] == 2 and group["test_accuracy_std"] >= 0.0
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out


def test_paper_presets_expand_into_the_lr_selection_grid(tmp_path: Path) -> None:
    from ncmse.train.config import list_presets

    presets = tuple(p for p in list_presets() if p.startswith("paper-"))
    pairs = {tuple(p.split("-")[1:3]) for p in presets}
    assert len(pairs) == 15 and len(presets) == 30
    assert {p.rsplit("-", 1)[1] for p in presets} == {"mse", "ce"}
    lrs = (PAPER_LR_GRID[0], PAPER_LR_GRID[-1])  # the whole grid is 750 runs: the ends suffice
    runs = expand(SweepSpec(presets=presets, lrs=lrs, select_lr=True), tmp_path)
    assert len(runs) == 60 and len({r.name for r in runs}) == 60
    for r in runs:
        cfg = r.config
        assert (cfg["epochs"], cfg["batch_size"], cfg["momentum"]) == (350, 128, 0.9)
        assert cfg["weight_decay"] == 5e-4 and cfg["measure_test"] is True


def test_cli_report_step_names_the_finished_runs_only(tmp_path: Path, capsys) -> None:
    """The CLI's report step reads the manifest: no finished run → no report, ``report: null``."""
    from ncmse.cli.sweep import write_sweep_report
    from ncmse.sweep.core import finished_run_dirs

    runs = [
        {"name": "a", "status": "finished", "run_dir": str(tmp_path / "runs" / "a")},
        {"name": "b", "status": "diverged", "run_dir": str(tmp_path / "runs" / "b")},
        {"name": "c", "status": "finished", "run_dir": str(tmp_path / "runs" / "c")},
    ]
    (tmp_path / "sweep.json").write_text(json.dumps({"kind": "sweep", "runs": runs}))
    assert finished_run_dirs(tmp_path) == [tmp_path / "runs" / "a", tmp_path / "runs" / "c"]
    for run in runs:
        run["status"] = "failed"
    (tmp_path / "sweep.json").write_text(json.dumps({"kind": "sweep", "runs": runs}))
    assert write_sweep_report(tmp_path) is None
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["report"] is None and manifest["runs"] == runs
    assert not (tmp_path / "report").exists() and not is_locked(tmp_path, ".sweep.lock")


def test_results_csv_gap_cells_are_what_the_sweep_wrote_before(tmp_path: Path) -> None:
    import csv
    import io

    from ncmse.rundir.format import csv_cell
    from ncmse.sweep.core import _results_csv
    from ncmse.verdicts.pairing import Pairing

    def old_cell(value: object) -> object:
        """The results.csv gap cell before the format module wrote it (``_csv_bool``)."""
        if value is None:
            return ""
        return csv_cell(str(value).lower() if isinstance(value, bool) else value)

    gaps = [math.nan, math.inf, -math.inf, 1e308, 5e-324, 1e-17, 0.1, None, True, False, 3]
    runs = expand(_spec(seeds=tuple(range(len(gaps))), lrs=(0.05,)), tmp_path)
    pairs = [
        {"value": gap, "group": f"g{k}", "mse_run": run.name, "ce_run": f"ce-{k}"}
        for k, (gap, run) in enumerate(zip(gaps, runs))
    ]
    groups = [{"group": f"g{k}", "holds": [True, False, None][k % 3], "reason": "r"}
              for k in range(len(gaps))]  # fmt: skip
    results = [RunResult(run, "finished", {"test_accuracy": 0.5})
               for run in runs]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(_results_csv(results, Pairing(pairs, [], groups)))))
    assert [r["accuracy_gap"] for r in rows] == [str(old_cell(g)) for g in gaps]
    assert [r["accuracy_gap"] for r in rows][:5] == ["nan", "inf", "-inf", "1e+308", "5e-324"]
    assert rows[8]["accuracy_gap"] == "true" and rows[9]["accuracy_gap"] == "false"
    outcomes = ["holds", "fails", "inconclusive"] * 4
    assert [r["accuracy_gap_outcome"] for r in rows] == outcomes[: len(gaps)]
