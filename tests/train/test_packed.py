"""Packed runs (``ncmse sweep --pack K``): same files, same numbers as runs trained alone."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncmse.cli import main
from ncmse.errors import ConfigError
from ncmse.sweep import SweepOptions, SweepSpec, expand, run_sweep
from ncmse.sweep.grid import load_sweep_file
from ncmse.sweep.pack import compatibility_key, group_packs
from ncmse.train.config import resolve_config
from ncmse.train.loop import CRASH_ENV
from ncmse.train.packed import PackMember, train_packed

QUIET = ["quiet=true", "report=false", "tensorboard=false"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_same_metrics(a: Path, b: Path, rel: float = 1e-5) -> None:
    """metrics.csv of two run directories agree in every column but wall_time."""
    ra, rb = _rows(a / "metrics.csv"), _rows(b / "metrics.csv")
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for key in x:
            if key == "wall_time":
                continue
            try:
                fx, fy = float(x[key]), float(y[key])
            except ValueError:
                assert x[key] == y[key], key
                continue
            assert fx == pytest.approx(fy, rel=rel, abs=1e-12), (key, x["epoch"])


def test_group_packs_by_compatible_config(tmp_path: Path) -> None:
    spec = SweepSpec(presets=("tiny", "digits-mlp-ce"), seeds=(0, 1, 2), lrs=(0.1, 0.05))
    runs = expand(spec, tmp_path)
    packs = group_packs(runs, 4)
    # tiny (6 runs) -> 4 + 2; digits-mlp-ce (6 runs) -> 4 + 2; never mixed
    assert sorted(len(p) for p in packs) == [2, 2, 4, 4]
    for pack in packs:
        assert len({r.preset for r in pack}) == 1
        assert len({compatibility_key(r.config) for r in pack}) == 1
    assert [r.name for p in packs for r in p if r.preset == "tiny"] == [
        r.name for r in runs if r.preset == "tiny"
    ]
    assert [len(p) for p in group_packs(runs, 1)] == [1] * 12
    other_epochs = expand(SweepSpec(presets=("tiny",), overrides=("epochs=2",)), tmp_path)
    assert compatibility_key(other_epochs[0].config) != compatibility_key(runs[0].config)
    with pytest.raises(ConfigError, match="--pack must be a positive integer"):
        group_packs(runs, 0)


def test_pack_option_validation(tmp_path: Path) -> None:
    spec = SweepSpec(presets=("tiny",))
    with pytest.raises(ConfigError, match="--pack must be a positive integer"):
        run_sweep(spec, SweepOptions(out=tmp_path / "s", pack=0))
    from ncmse.sweep.execute import SlurmOptions

    opts = SweepOptions(out=tmp_path / "s", executor="local", slurm=SlurmOptions(gpus=2), pack=2)
    with pytest.raises(ConfigError, match="cannot be combined with --gpus 2"):
        run_sweep(spec, opts)
    f = tmp_path / "sweep.yaml"
    f.write_text("presets: [tiny]\npack: 4\n")
    assert load_sweep_file(f)["pack"] == 4
    f.write_text("presets: [tiny]\npack: -1\n")
    with pytest.raises(ConfigError, match="'pack' must be a positive integer"):
        load_sweep_file(f)


@pytest.mark.slow
def test_sweep_pack_equals_separate_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The acceptance test of the issue: --pack 3 and no packing give the same metrics.csv
    (packed runs keep their own seed's data order, lr schedule and measurements)."""
    base = ["sweep", "--preset", "tiny", "--seeds", "0", "1", "2", "--no-report"]
    assert main([*base, "--pack", "3", "--out", str(tmp_path / "packed")]) == 0
    out = capsys.readouterr().out
    assert "pack of 3" in out
    assert main([*base, "--out", str(tmp_path / "solo")]) == 0
    names = sorted(p.name for p in (tmp_path / "solo" / "runs").iterdir())
    assert len(names) == 3
    for name in names:
        packed, solo = tmp_path / "packed" / "runs" / name, tmp_path / "solo" / "runs" / name
        assert sorted(p.name for p in packed.iterdir()) == sorted(p.name for p in solo.iterdir())
        _assert_same_metrics(packed, solo)
        summary = json.loads((packed / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["engine"]["pack_size"] == 3
    manifest = json.loads((tmp_path / "packed" / "sweep.json").read_text())
    assert manifest["pack"] == 3 and all(r["outcome"] == "finished" for r in manifest["runs"])
    # done runs are skipped
    assert main([*base, "--pack", "3", "--out", str(tmp_path / "packed")]) == 0
    assert "3 done" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_pack_resumes_each_run_to_identical_metrics(tmp_path: Path) -> None:
    """A pack killed after epoch 2 of 4 resumes every run from its own checkpoint; one run
    resumed (epoch 2) and one new run (epoch 0) then train together at different epochs."""
    cfgs = [resolve_config("tiny", [*QUIET, "epochs=4", f"seed={s}"]) for s in (0, 1, 2)]
    ref = [tmp_path / f"solo{s}" for s in range(3)]
    for cfg, d in zip(cfgs, ref):
        train_packed([PackMember(d, "new", cfg.to_dict())])
    # kill a pack of runs 0 and 1 after epoch 2 (a subprocess: the hook calls os._exit)
    spec = {"runs": [{"run_dir": str(tmp_path / f"p{s}"), "state": "new",
                      "config": cfgs[s].to_dict()} for s in (0, 1)]}  # fmt: skip
    pack_file = tmp_path / "pack.json"
    pack_file.write_text(json.dumps(spec))
    env = {**os.environ, CRASH_ENV: "2"}
    proc = subprocess.run([sys.executable, "-m", "ncmse.cli.pack", str(pack_file)], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    for s in (0, 1):
        assert len(_rows(tmp_path / f"p{s}" / "metrics.csv")) == 3  # epochs 0, 1, 2
    results = train_packed(
        [
            PackMember(tmp_path / "p0", "resume"),
            PackMember(tmp_path / "p2", "new", cfgs[2].to_dict()),
            PackMember(tmp_path / "p1", "resume"),
        ]
    )
    assert [r["status"] for r in results] == ["finished"] * 3
    for s in range(3):
        _assert_same_metrics(tmp_path / f"p{s}", ref[s], rel=0.0)


def test_pack_diverged_run_stops_alone(tmp_path: Path) -> None:
    cfgs = [resolve_config("tiny", [*QUIET, "epochs=2", f"seed={s}"]) for s in (0, 1)]
    bad = resolve_config("tiny", [*QUIET, "epochs=2", "seed=2", "lr=1e6"])
    members = [PackMember(tmp_path / f"r{k}", "new", c.to_dict()) for k, c in enumerate(cfgs)]
    members.insert(1, PackMember(tmp_path / "bad", "new", bad.to_dict()))
    results = train_packed(members)
    assert [r["status"] for r in results] == ["finished", "diverged", "finished"]
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "NaN" in summary["error"]


def test_pack_member_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="state 'other'"):
        train_packed([PackMember(tmp_path / "x", "other", {})])
    with pytest.raises(ConfigError, match="needs its config"):
        train_packed([PackMember(tmp_path / "x", "new")])
    from ncmse.errors import InputError

    with pytest.raises(InputError, match="cannot resume"):
        train_packed([PackMember(tmp_path / "y", "resume")])


def test_run_dirs_of_older_ncmse_without_engine_keys_still_match(tmp_path: Path) -> None:
    import yaml

    from ncmse.sweep.state import config_differences

    cfg = resolve_config("tiny").to_dict()
    old = {k: v for k, v in cfg.items() if k not in ("precision", "channels_last", "cuda_graph")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert config_differences(cfg, tmp_path) == []
    changed = dict(cfg, precision="bf16", cuda_graph=False, channels_last=True)
    assert config_differences(changed, tmp_path) == ["precision"]


# ---- issue 19.10: the pack process ends like ncmse train; its lines name their run ----------


def _pack_file(tmp_path: Path, *sets: str, names: tuple[str, ...] = ("r0", "r1")) -> Path:
    runs = [
        {"run_dir": str(tmp_path / name), "state": "new",
         "config": resolve_config("tiny", [*sets, f"seed={k}"]).to_dict()}
        for k, name in enumerate(names)
    ]  # fmt: skip
    path = tmp_path / "pack.json"
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_pack_console_lines_name_their_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncmse.cli.pack import main as pack_main

    pack = _pack_file(tmp_path, "report=false", "tensorboard=false", "epochs=2", "quiet=false")
    assert pack_main([str(pack)]) == 0
    err = capsys.readouterr().err
    epoch_lines = [line for line in err.splitlines() if "train_err" in line]
    assert len(epoch_lines) == 6, err  # epochs 0, 1, 2 of each run
    for name in ("r0", "r1"):
        assert sum(line.startswith(f"[{name}] epoch ") for line in epoch_lines) == 3, err


@pytest.mark.parametrize(
    ("raised", "code", "fragment"),
    [
        (KeyboardInterrupt(), 130, "ncmse pack: interrupted"),
        (OSError(28, "No space left on device"), 2, "no space left on the device"),
    ],
)
def test_pack_interrupted_or_disk_full_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    code: int,
    fragment: str,
) -> None:
    import ncmse.train.packed
    from ncmse.cli.pack import main as pack_main
    from ncmse.rundir.lock import is_locked

    def fails(*args, **kwargs):
        raise raised

    monkeypatch.setattr(ncmse.train.packed, "lockstep_epoch", fails)
    pack = _pack_file(tmp_path, *QUIET, "epochs=2")
    assert pack_main([str(pack)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and fragment in err, err
    assert err.strip().splitlines()[-1].startswith("ncmse pack: "), err
    assert not any(is_locked(tmp_path / name) for name in ("r0", "r1"))


@pytest.mark.slow
def test_pack_sigterm_is_one_line_and_releases_the_runs(tmp_path: Path) -> None:
    import signal
    import time

    from ncmse.rundir.lock import is_locked

    pack = _pack_file(tmp_path, *QUIET, "epochs=5000", "checkpoint_every=1")
    proc = subprocess.Popen([sys.executable, "-m", "ncmse.cli.pack", str(pack)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        (tmp_path / n / "checkpoints" / "last.pt").is_file() for n in ("r0", "r1")
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "ncmse pack: terminated (SIGTERM)" in err, err
    assert not any(is_locked(tmp_path / name) for name in ("r0", "r1"))


# ---- issue 19.11: a pack that cannot start leaves no run directory behind -------------------


def test_pack_of_runs_that_do_not_fit_together_creates_nothing(tmp_path: Path) -> None:
    a = resolve_config("tiny", [*QUIET, "epochs=1", "batch_size=128"])
    b = resolve_config("tiny", [*QUIET, "epochs=1", "batch_size=64", "seed=1"])
    members = [PackMember(tmp_path / "a", "new", a.to_dict()),
               PackMember(tmp_path / "deep" / "b", "new", b.to_dict())]  # fmt: skip
    with pytest.raises(ConfigError, match="same number of batches per epoch") as err:
        train_packed(members)
    assert str(tmp_path / "a") in str(err.value)
    assert sorted(tmp_path.iterdir()) == []


def test_pack_whose_later_run_is_refused_removes_the_runs_it_created(tmp_path: Path) -> None:
    from ncmse.errors import InputError
    from ncmse.rundir.lock import is_locked

    cfg = resolve_config("tiny", [*QUIET, "epochs=1"]).to_dict()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("the user's")
    members = [PackMember(tmp_path / "new" / "r0", "new", cfg),
               PackMember(taken, "new", dict(cfg, seed=1))]  # fmt: skip
    with pytest.raises(InputError, match="already exists"):
        train_packed(members)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and not is_locked(taken)
