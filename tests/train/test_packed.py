"""Packed runs (``ncmse sweep --pack K``): same files, same numbers as runs trained alone."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kill_after
from ncmse.cli import main
from ncmse.errors import ConfigError, DivergenceError
from ncmse.sweep import SweepOptions, SweepSpec, expand, run_sweep
from ncmse.sweep.grid import load_sweep_file
from ncmse.sweep.pack import compatibility_key, group_packs
from ncmse.train.config import resolve_config
from ncmse.train.loop import CHECK_EVERY, Trainer, lockstep_epoch, train_together
from ncmse.train.packed import PackMember, train_packed
from ncmse.train.setup import build_components

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
    # kill a pack of runs 0 and 1 after epoch 2 (a subprocess ended by os._exit)
    spec = {"runs": [{"run_dir": str(tmp_path / f"p{s}"), "state": "new",
                      "config": cfgs[s].to_dict()} for s in (0, 1)]}  # fmt: skip
    pack_file = tmp_path / "pack.json"
    pack_file.write_text(json.dumps(spec))
    kill = [sys.executable, kill_after.__file__, "2", "ncmse.cli.pack", str(pack_file)]
    proc = subprocess.run(kill, capture_output=True, text=True, check=False)
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


# ---- the one epoch loop: K runs in lockstep, each one as when trained alone -----------------

#: (seed, lr, weight decay) of three runs that differ in data order, step size and decay
SPECS = [(0, 0.05, 5e-4), (1, 0.1, 1e-3), (2, 0.02, 0.0)]


def _trainers(*specs: tuple[int, float, float], sets: tuple[str, ...] = ()) -> list[Trainer]:
    """Trainers of the tiny preset (batches of 16: 75 steps per epoch), no files."""
    out = []
    for seed, lr, wd in specs:
        cfg = resolve_config("tiny", [*QUIET, "batch_size=16", "epochs=2", f"seed={seed}",
                                      f"lr={lr}", f"weight_decay={wd}", *sets])  # fmt: skip
        out.append(Trainer(cfg, build_components(cfg, torch.device("cpu"))))
    return out


def _same_parameters(a: Trainer, b: Trainer) -> bool:
    """Bit for bit (NaN where the other has NaN: a diverged run's parameters)."""
    pairs = zip(a.network.parameters(), b.network.parameters())
    return all(torch.allclose(p, q, rtol=0.0, atol=0.0, equal_nan=True) for p, q in pairs)


class _NanFrom(torch.nn.Module):
    """The criterion, turned NaN from its ``at``-th call on (counts its calls)."""

    def __init__(self, inner: torch.nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = self.inner(logits, y)
        return value * float("nan") if self.calls >= self.at else value


def _plain_epoch(t: Trainer, epoch: int) -> tuple[float, float, int]:
    """The independent reference: a hand-written epoch of one trainer's step over its loader
    (mean objective, accuracy, steps), no stop rule."""
    t.step.model.train()
    t.train_loader.set_epoch(epoch)
    total, correct, seen, steps = torch.zeros(()), torch.zeros((), dtype=torch.long), 0, 0
    for xb, yb in t.train_loader:
        objective, right = t.step(xb, yb)
        total += objective * len(yb)
        correct += right
        seen += len(yb)
        steps += 1
    return float(total) / seen, float(correct) / seen, steps


def test_lockstep_epoch_equals_separate_runs_bit_for_bit() -> None:
    """Each run keeps its own seed (data order), lr and weight decay: alone (K = 1), packed and
    in a hand-written loop, the same numbers and parameters."""
    plain, solo, packed = _trainers(*SPECS), _trainers(*SPECS), _trainers(*SPECS)
    for epoch in (1, 2):
        reference = [_plain_epoch(t, epoch) for t in plain]
        alone = [lockstep_epoch([t], [epoch])[0] for t in solo]
        together = lockstep_epoch(packed, [epoch] * len(packed))
        for ref, a, b in zip(reference, alone, together):
            assert not a.stopped and not b.stopped
            assert (a.objective, a.accuracy, a.steps) == ref
            assert (b.objective, b.accuracy, b.steps) == ref
            assert a.steps == len(solo[0].train_loader) == 75
    assert all(_same_parameters(a, b) for a, b in zip(plain, solo))
    assert all(_same_parameters(a, b) for a, b in zip(plain, packed))


def test_lockstep_epoch_rejects_runs_that_do_not_fit() -> None:
    (a,) = _trainers(SPECS[0])
    (b,) = _trainers(SPECS[1], sets=("batch_size=32",))
    with pytest.raises(ConfigError, match="same number of batches"):
        lockstep_epoch([a, b], [1, 1])
    with pytest.raises(ConfigError, match="2 epochs and 1 streams for 1 runs"):
        lockstep_epoch([a], [1, 2])


@pytest.mark.parametrize("at", [3, CHECK_EVERY + 2])
def test_packed_run_that_diverges_stops_at_the_step_it_stops_at_alone(at: int) -> None:
    """The one stop rule: a run whose objective turns NaN at step ``at`` stops at the next check
    point, packed or alone; the other runs of its pack train the whole epoch, as alone."""
    (alone,) = _trainers(SPECS[1])
    alone.step.criterion = solo_poison = _NanFrom(alone.step.criterion, at)
    (solo,) = lockstep_epoch([alone], [1])
    packed = _trainers(*SPECS)
    packed[1].step.criterion = poison = _NanFrom(packed[1].step.criterion, at)
    together = lockstep_epoch(packed, [1] * 3)
    check_point = -(-at // CHECK_EVERY) * CHECK_EVERY
    assert check_point < len(alone.train_loader)
    assert solo.stopped and math.isnan(solo.objective)
    assert solo.steps == solo_poison.calls == check_point
    assert together[1].stopped and math.isnan(together[1].objective)
    assert together[1].steps == poison.calls == check_point
    assert _same_parameters(alone, packed[1])
    others = _trainers(SPECS[0], SPECS[2])
    for other, k in zip(others, (0, 2)):
        (ref,) = lockstep_epoch([other], [1])
        assert not together[k].stopped and together[k].steps == len(other.train_loader)
        assert together[k].objective == ref.objective and _same_parameters(other, packed[k])


def test_train_together_stops_the_diverged_run_and_finishes_the_others() -> None:
    packed = _trainers(*SPECS)
    packed[1].step.criterion = poison = _NanFrom(packed[1].step.criterion, 80)  # epoch 2, step 5
    told: list[Trainer] = []
    outcomes = train_together(packed, on_diverged=lambda t, exc: told.append(t))
    assert isinstance(outcomes[1], DivergenceError) and told == [packed[1]]
    assert "training objective became NaN/Inf in epoch 2" in str(outcomes[1])
    assert poison.calls == 75 + CHECK_EVERY and packed[1].state.epoch == 1
    for k in (0, 2):
        assert outcomes[k]["status"] == "finished" and outcomes[k]["epochs_done"] == 2
    with pytest.raises(DivergenceError, match="epoch 2"):
        (alone,) = _trainers(SPECS[1])
        alone.step.criterion = _NanFrom(alone.step.criterion, 80)
        alone.fit()


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
    import ncmse.train.loop
    from ncmse.cli.pack import main as pack_main
    from ncmse.rundir.lock import is_locked

    def fails(*args, **kwargs):
        raise raised

    monkeypatch.setattr(ncmse.train.loop, "lockstep_epoch", fails)
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
