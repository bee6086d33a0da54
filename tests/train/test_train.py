"""Training loop, run directory contract, errors and the train/measure CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ncmse.cli.main import main
from ncmse.collapse.result import flatten_row
from ncmse.errors import DivergenceError, InputError
from ncmse.rundir.reader import read_summary
from ncmse.train.config import list_presets, resolve_config
from ncmse.train.loop import CHECK_EVERY, Trainer, lockstep_epoch
from ncmse.train.models import classifier_of
from ncmse.train.run import train
from ncmse.train.schedule import lr_milestones, measurement_epochs
from ncmse.train.setup import build_components, scaled_classifier
from ncmse.train.sinks import load_checkpoint

QUIET = ["quiet=true", "report=false", "tensorboard=false"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_measurement_epochs_paper_length() -> None:
    epochs = measurement_epochs(350, 50)
    assert epochs[:2] == [0, 1] and epochs[-1] == 350  # epoch 0: the network as initialised
    assert 51 <= len(epochs) <= 56 and epochs == sorted(set(epochs))
    assert list(range(0, 15)) == epochs[:15]  # dense at the start, like SPEC §6
    assert measurement_epochs(7, 50) == list(range(0, 8))
    assert measurement_epochs(100, 5)[1 :: len(measurement_epochs(100, 5)) - 2] == [1, 100]
    assert measurement_epochs(10, 50, explicit=[0, 5, 5, 3]) == [0, 3, 5]


def test_lr_milestones_at_thirds() -> None:
    assert lr_milestones(350, [1 / 3, 2 / 3]) == [117, 233]
    assert lr_milestones(3, [1 / 3, 2 / 3]) == [1, 2]


def test_flatten_row_expands_snr() -> None:
    flat = flatten_row({"epoch": 1, "snr": [3.0, 2.0], "test_snr": [1.0], "nc1": 0.5})
    assert flat == {"epoch": 1, "snr_1": 3.0, "snr_2": 2.0, "test_snr_1": 1.0, "nc1": 0.5}


def test_tiny_run_writes_the_run_directory(tmp_path: Path) -> None:
    cfg = resolve_config("tiny", [*QUIET, "epochs=3"])
    out = tmp_path / "run"
    summary = train(cfg, out)
    rows = _read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]  # epoch 0: as initialised
    cols = list(rows[0])
    assert cols[:4] == ["epoch", "lr", "wall_time", "train_error"]
    for name in (
        "accuracy",
        "loss",
        "nc1",
        "nc3",
        "nc4",
        "loss_nc1",
        "loss_nc23",
        "loss_perp",
        "loss_ls",
        "lam",
        "snr_1",
        "snr_9",
        "test_accuracy",
        "test_nc1",
        "test_snr_9",
    ):
        assert name in cols, name
    assert "snr" not in cols and "snr_10" not in cols
    assert cols.index("test_accuracy") > cols.index("nc4_method")
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(jsonl) == 4 and len(jsonl[0]["snr"]) == 9 and len(jsonl[0]["test_snr"]) == 9
    assert float(rows[-1]["nc1"]) == jsonl[-1]["nc1"]
    for row in jsonl:
        parts = row["loss_nc1"] + row["loss_nc23"] + row["loss_perp"]
        assert parts == pytest.approx(row["loss"], rel=1e-9)
        assert row["lam"] == pytest.approx(10 * 5e-4 / 2)
        assert row["train_error"] == pytest.approx(1 - row["accuracy"])
    # lr recorded is the one used in that epoch: drops after epochs 1 and 2 (milestones)
    assert [r["lr"] for r in jsonl] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert summary["status"] == "finished" and summary["kind"] == "train"
    assert summary["final"]["epoch"] == 3 and summary["loss_name"] == "mse"
    # objective = nn.MSELoss (mean over N·C) = (2/C)·(L − ridge) for this run (SPEC §2)
    for row in jsonl:
        assert 0 < row["objective"] < row["loss"] and 0 < row["test_objective"]
    assert summary["lam"] == pytest.approx(2.5e-3) and "C*wd/2" in summary["lam_source"]
    assert {"dataset", "model", "seed", "environment", "tpt_epoch"} <= set(summary)
    assert read_summary(out) == summary
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored == cfg.to_dict()
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 3 and ckpt["config"] == cfg.to_dict()
    assert {"model", "optimizer", "scheduler", "rng"} <= set(ckpt)
    assert not list(out.rglob(".*.tmp"))


def test_epoch_0_measures_the_network_as_initialised(tmp_path: Path) -> None:
    """SPEC §6: the first row is the untrained network, before any optimiser step."""
    import dataclasses

    from ncmse.train.runtime import configure_torch
    from ncmse.train.setup import build_components, measure_split

    cfg = resolve_config("tiny", [*QUIET, "epochs=2", "measure_test=false"])
    train(cfg, tmp_path / "run")
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["epoch"] == 0 and first["train_error"] > 0.5  # ten classes, untrained
    device = torch.device("cpu")
    configure_torch(cfg, device)
    parts = build_components(dataclasses.replace(cfg), device)
    fresh = measure_split(parts.model, parts.loss, parts.bundle.train_x, parts.bundle.train_y,
                          num_classes=parts.bundle.num_classes, batch_size=256)  # fmt: skip
    assert fresh["nc1"] == pytest.approx(first["nc1"], rel=1e-9)
    assert fresh["loss"] == pytest.approx(first["loss"], rel=1e-9)


def test_freeze_features_trains_only_the_classifier(tmp_path: Path) -> None:
    """freeze_features: the features (BatchNorm statistics included) stay as initialised, so every
    metric of the features alone is the same at every measurement; the classifier learns."""
    cfg = resolve_config(None, [*QUIET, "epochs=3", "measure_test=false", "freeze_features=true"])
    assert cfg.freeze_features is True and cfg.model_kwargs["batch_norm"] is True
    trainer = Trainer(cfg, build_components(cfg, torch.device("cpu")))
    net = trainer.network
    before = {k: v.clone() for k, v in net.state_dict().items()}
    head = classifier_of(net)
    trainer.fit()
    after = net.state_dict()
    head_keys = {
        k for k in after if after[k].data_ptr() in {p.data_ptr() for p in head.parameters()}
    }
    assert head_keys and all(not torch.equal(after[k], before[k]) for k in head_keys)
    for key in set(after) - head_keys:  # weights, running means/variances, batch counters
        assert torch.equal(after[key], before[key]), key
    net.train()
    assert head.training and not any(m.training for m in net.modules() if m is not head
                                     and head not in list(m.modules()))  # fmt: skip
    rows = trainer.state.rows
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    for name in ("nc1", "cdnv", "equinorm_means", "maxangle_means", "snr"):
        assert all(r[name] == rows[0][name] for r in rows), name
    assert rows[-1]["train_error"] < rows[0]["train_error"]  # the classifier did learn
    assert rows[-1]["nc3"] != rows[0]["nc3"]


def test_freeze_features_is_validated(capsys) -> None:
    assert resolve_config("tiny").freeze_features is False
    assert main(["train", "--set", "freeze_features=maybe", "--print-config"]) == 2
    assert "freeze_features" in capsys.readouterr().err


def test_existing_directory_is_refused_unless_overwrite(tmp_path: Path) -> None:
    cfg = resolve_config("tiny", [*QUIET, "epochs=1", "measure_test=false"])
    out = tmp_path / "run"
    train(cfg, out)
    with pytest.raises(InputError, match="already exists.*--resume.*--overwrite"):
        train(cfg, out)
    (out / "keep.txt").write_text("mine")
    summary = train(cfg, out, overwrite=True)
    assert summary["status"] == "finished" and (out / "keep.txt").exists()


def test_tpt_epoch_is_first_zero_training_error(tmp_path: Path) -> None:
    cfg = resolve_config(
        None,
        [*QUIET, "epochs=15", "measure_test=false", "checkpoint_every=0", "lr_milestones=[0.99]"],
    )
    summary = train(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    zero = [r["epoch"] for r in rows if r["train_error"] == 0.0]
    assert zero, "the default preset should reach zero training error within 15 epochs"
    assert summary["tpt_epoch"] == zero[0]
    pnas = [r["epoch"] for r in rows if r["train_error"] <= 1e-3]
    assert summary["tpt_epoch_999"] == pnas[0] <= zero[0]


class _PoisonAfter(torch.nn.Module):
    """The criterion, turned NaN from the ``at``-th call of epoch ``epoch`` on (counts calls)."""

    def __init__(self, inner: torch.nn.Module, trainer: Trainer, epoch: int, at: int) -> None:
        super().__init__()
        self.inner, self.trainer, self.epoch, self.at = inner, trainer, epoch, at
        self.calls = 0

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = self.inner(logits, y)
        if self.trainer.state.epoch + 1 < self.epoch:
            return value
        self.calls += 1
        return value * float("nan") if self.calls >= self.at else value


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = resolve_config("tiny", [*QUIET, "epochs=4", "measure_test=false"])
    trainer = Trainer.from_config(cfg, tmp_path)
    trainer.step.criterion = _PoisonAfter(trainer.step.criterion, trainer, epoch=3, at=1)
    with pytest.raises(DivergenceError, match="epoch 3.*last good checkpoint \\(epoch 2\\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path)["epoch"] == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and "NaN" in summary["error"]


def test_divergence_names_the_epoch_of_the_checkpoint_actually_kept(tmp_path: Path) -> None:
    """checkpoint_every=2: a divergence in epoch 4 keeps the checkpoint of epoch 2, not 3."""
    cfg = resolve_config("tiny", [*QUIET, "epochs=5", "measure_test=false", "checkpoint_every=2"])
    trainer = Trainer.from_config(cfg, tmp_path)
    trainer.step.criterion = _PoisonAfter(trainer.step.criterion, trainer, epoch=4, at=1)
    with pytest.raises(DivergenceError, match="epoch 4.*last good checkpoint \\(epoch 2\\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path)["epoch"] == 2


@pytest.mark.parametrize("at", [3, CHECK_EVERY + 2])
def test_divergence_stops_mid_epoch_without_a_progress_bar(tmp_path: Path, at: int) -> None:
    """quiet / non-TTY: the stop check still runs every CHECK_EVERY steps, not at the epoch end."""
    cfg = resolve_config("tiny", [*QUIET, "epochs=2", "measure_test=false", "batch_size=8"])
    trainer = Trainer.from_config(cfg, tmp_path)
    assert not trainer.console.wants_progress
    steps = len(trainer.train_loader)
    assert steps > 3 * CHECK_EVERY
    poison = _PoisonAfter(trainer.step.criterion, trainer, epoch=1, at=at)
    trainer.step.criterion = poison
    with pytest.raises(DivergenceError, match="epoch 1"):
        trainer.fit()
    assert poison.calls == -(-at // CHECK_EVERY) * CHECK_EVERY  # the next check point


def test_progress_bar_gets_the_running_means_at_each_check_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal the bar is fed, at each check point, the mean objective and accuracy of the
    steps so far; its last values are the epoch's (checked against the steps' own outputs)."""
    cfg = resolve_config("tiny", [*QUIET, "epochs=1", "measure_test=false", "batch_size=8"])
    trainer = Trainer.from_config(cfg, tmp_path)
    trainer.console.enabled = True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert trainer.console.wants_progress
    fed: list[tuple[int, float, float]] = []
    monkeypatch.setattr(trainer.console, "progress", lambda i, o, a: fed.append((i, o, a)))
    outputs: list[tuple[float, float, int]] = []
    step = trainer.step

    def recording(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        objective, correct = step(x, y)
        outputs.append((float(objective) * len(y), float(correct), len(y)))
        return objective, correct

    monkeypatch.setattr(trainer, "step", recording)
    recording.model = step.model  # type: ignore[attr-defined]
    steps = len(trainer.train_loader)
    (totals,) = lockstep_epoch([trainer], [1])
    assert [i for i, _, _ in fed] == [*range(CHECK_EVERY, steps, CHECK_EVERY), steps]
    for i, objective, accuracy in fed:
        done = outputs[:i]
        seen = sum(n for _, _, n in done)
        assert objective == pytest.approx(sum(o for o, _, _ in done) / seen, rel=1e-6)
        assert accuracy == pytest.approx(sum(c for _, c, _ in done) / seen, rel=1e-12)
    assert fed[-1][1:] == (totals.objective, totals.accuracy)


def test_scaled_classifier_restores_exactly() -> None:
    layer = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    with scaled_classifier(layer, 1 / 3):
        assert torch.allclose(layer.weight, before[0] / 3)
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), before))


def test_rescaled_mse_run_and_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = resolve_config(
        "tiny",
        [
            "quiet=true",
            "report=false",
            "tensorboard=true",
            "epochs=2",
            "loss=rescaled_mse",
            "rescale_m=4",
            "rescale_k=2",
        ],
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["lam_exact"] is False and "Hui" in summary["lam_source"]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_cli_train_and_measure_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    sets = [x for s in [*QUIET, "epochs=2"] for x in ("--set", s)]
    assert main(["train", "--config", "tiny", *sets, "--out", str(out)]) == 0
    final = json.loads((out / "summary.json").read_text())["final"]
    capsys.readouterr()
    report = tmp_path / "m.json"
    code = main(
        ["measure", str(out / "checkpoints" / "last.pt"), "--split", "both", "--json", str(report)]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report.read_text())
    assert printed["epoch"] == 2 and printed["lam"] == final["lam"]
    for key in ("nc1", "loss", "loss_perp", "accuracy", "nc4"):
        assert printed["train"][key] == pytest.approx(final[key], rel=1e-9, abs=1e-12)
        assert printed["test"][key] == pytest.approx(final[f"test_{key}"], rel=1e-9, abs=1e-12)
    # every digit class is present: --min-samples 1 measures the same set, and says so
    assert main(["measure", str(out / "checkpoints" / "last.pt"), "--min-samples", "1"]) == 0
    subset = json.loads(capsys.readouterr().out)["train"]
    assert subset["num_classes_excluded"] == 0 and subset["num_samples_excluded"] == 0
    assert subset["nc1"] == pytest.approx(final["nc1"], rel=1e-9)
    assert main(["measure", str(out / "checkpoints" / "last.pt"), "--min-samples", "0"]) == 2
    assert "min_samples" in capsys.readouterr().err


def test_cli_errors_exit_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--set", "epoch=3", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key 'epoch'" in capsys.readouterr().err
    assert main(["train", "--config", "nope"]) == 2
    assert "Available presets" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--set", "lr=1"]) == 2
    assert "--resume takes the config" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "none.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_print_config_and_presets(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--print-config", "--set", "epochs=5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["epochs"] == 5
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "paper-cifar10-resnet18-mse" in out.split()
    # every preset is followed by what it is (its YAML's first comment sentence), indented
    lines = out.splitlines()
    names = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert len(names) == len(list_presets()) and all(
        lines[i + 1].startswith("    ") and len(lines[i + 1].strip()) > 10 for i in names
    )
    tiny = lines[lines.index("tiny") + 1].strip()
    assert tiny.startswith("Smoke test: a few epochs of a small MLP on digits")


def test_unavailable_dataset_surfaces_data_error(tmp_path: Path) -> None:
    from ncmse.errors import DataUnavailableError

    cfg = resolve_config(
        "tiny", [*QUIET, "dataset=cifar10", "download=false", f"data_dir={tmp_path}"]
    )
    with pytest.raises(DataUnavailableError):
        train(cfg, tmp_path / "run")


def test_cli_data_dir_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data-dir", str(tmp_path), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data_dir"] == str(tmp_path)
    args = [
        "train",
        "--config",
        "tiny",
        "--data-dir",
        str(tmp_path),
        "--set",
        "dataset=cifar10",
        "--set",
        "download=false",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err.lower() and "--data-dir" in err
