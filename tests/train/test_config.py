"""Config resolution (defaults ← preset ← --set) and its validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncmse.errors import ConfigError
from ncmse.rundir.reader import read_config
from ncmse.rundir.writer import RunWriter
from ncmse.train.config import (
    DEFAULT_PRESET,
    Config,
    config_from_dict,
    list_presets,
    load_yaml_config,
    parse_overrides,
    resolve_config,
    valid_keys,
)


def test_default_is_digits_mlp_mse() -> None:
    cfg = resolve_config()
    assert (cfg.dataset, cfg.model, cfg.loss, cfg.name) == ("digits", "mlp", "mse", DEFAULT_PRESET)
    assert cfg.batch_size == 128 and cfg.momentum == 0.9


def test_every_shipped_preset_validates() -> None:
    names = list_presets()
    for name in names:
        cfg = resolve_config(name)
        assert cfg.name == name, f"preset {name} names itself {cfg.name}"
    for cpu in ("digits-mlp-mse", "digits-mlp-ce", "fashion-cnn-mse", "fashion-cnn-ce", "tiny"):
        assert cpu in names


def test_paper_grid_follows_the_protocol() -> None:
    paper = [n for n in list_presets() if n.startswith("paper-")]
    assert len(paper) == 30
    pairs = {tuple(n.split("-")[1:3]) for n in paper}
    assert len(pairs) == 15
    assert {n.split("-")[1] for n in paper} == {"mnist", "fashionmnist", "cifar10", "svhn", "stl10"}
    for name in paper:
        cfg = resolve_config(name)
        assert (cfg.epochs, cfg.batch_size, cfg.weight_decay, cfg.momentum) == (350, 128, 5e-4, 0.9)
        assert cfg.lr_milestones == pytest.approx([1 / 3, 2 / 3]) and cfg.lr_gamma == 0.1
        assert cfg.loss == name.rsplit("-", 1)[1]
        expected = {"mnist": 5000, "svhn": 4600}.get(cfg.dataset)
        assert cfg.per_class == expected


def test_overrides_are_yaml_scalars_and_win() -> None:
    cfg = resolve_config(
        "tiny", ["lr=1e-3", "epochs=7", "measure_test=false", "lam=null", "model_kwargs.width=32"]
    )
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.epochs == 7 and cfg.measure_test is False and cfg.lam is None
    assert cfg.model_kwargs == {"width": 32, "depth": 2, "batch_norm": False}


def test_changing_model_drops_the_presets_model_options() -> None:
    cfg = resolve_config(None, ["model=cnn"])
    assert cfg.model == "cnn" and cfg.model_kwargs == {}


def test_parse_overrides_rejects_missing_equals() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_unknown_key_names_it_and_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, ["epoch=3"])
    msg = str(info.value)
    assert "'epoch'" in msg and "Did you mean 'epochs'" in msg and "weight_decay" in msg


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: digits\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate.*bad.yaml"):
        resolve_config(str(path))


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("loss=hinge", "choose one of \\['mse', 'ce', 'rescaled_mse'\\]"),
        ("dataset=imagenet", "'dataset'.*cifar10"),
        ("model=vgg16", "'model'.*vgg11"),
        ("epochs=0", "'epochs': must be >= 1"),
        ("epochs=2.5", "'epochs' must be of type int"),
        ("lr=fast", "'lr' must be of type float"),
        ("momentum=1.5", "in \\[0, 1\\)"),
        ("lr_milestones=[0.5, 2]", "fractions"),
        ("measure_test=maybe", "'measure_test' must be of type bool"),
        ("device=tpu", "'device'"),
        ("lr=.nan", "finite"),
        ("rescale_m=2", "rescaled_mse"),
        ("measure_epochs=[1, 999]", "measure_epochs"),
    ],
)
def test_invalid_values_name_key_and_choices(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        resolve_config("tiny", [override])


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(ConfigError, match="Available presets:.*digits-mlp-mse"):
        resolve_config("digits-mlp-mes")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config("/nonexistent/config.yaml")


def test_save_and_reload_roundtrip(tmp_path: Path) -> None:
    cfg = resolve_config("fashion-cnn-mse", ["seed=3"])
    RunWriter(tmp_path).write_config(cfg.to_dict())
    data = read_config(tmp_path)
    assert set(data) == set(valid_keys())
    assert config_from_dict(data) == cfg
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_yaml_file_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text("loss: ce\nepochs: 3\nweight_decay: 1e-3\n")
    cfg = resolve_config(str(path))
    assert cfg.loss == "ce" and cfg.epochs == 3 and cfg.weight_decay == 1e-3
    assert cfg.batch_size == Config().batch_size
    assert load_yaml_config("tiny")["name"] == "tiny"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model_kwargs.width=-5", "model_kwargs.width=-5 is invalid for model 'mlp'"),
        ("model_kwargs.width=0", "must be an integer >= 1"),
        ("model_kwargs.depth=abc", "model_kwargs.depth='abc'"),
        ("model_kwargs.depth=2.5", "must be an integer >= 1"),
        ("model_kwargs.batch_norm=maybe", "true or false"),
    ],
)
def test_invalid_model_kwargs_are_config_errors(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("tiny", [override])
    assert fragment in str(err.value) and "--set model_kwargs." in str(err.value)


def test_invalid_model_kwargs_refused_before_a_run_directory_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncmse.cli import main

    out = tmp_path / "run"
    assert (
        main(["train", "--config", "tiny", "--set", "model_kwargs.width=0", "--out", str(out)]) == 2
    )
    assert "model_kwargs.width=0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("seed=99999999999999999999", "'seed': must be in [0, 2**63 - 1]"),
        ("seed=-1", "'seed': must be in [0, 2**63 - 1]"),
        ("num_threads=99999999999", "'num_threads': must be in [1, 2147483647]"),
        ("epochs=99999999999999999999", "'epochs': must be >= 1 (and at most 1e+09)"),
        ("batch_size=99999999999999999999", "'batch_size': integers must fit 64 bits"),
        ("measure_epochs=[1, 99999999999999999999]", "'measure_epochs': integers must fit"),
        ("checkpoint_every=99999999999999999999", "'checkpoint_every': integers must fit"),
    ],
)
def test_integers_out_of_range_are_config_errors(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("tiny", [override])
    assert fragment in str(err.value)


def test_integer_bounds_are_what_torch_and_numpy_take(tmp_path: Path) -> None:
    import numpy as np
    import torch

    cfg = resolve_config("tiny", [f"seed={2**63 - 1}", f"epochs={10**9}"])
    torch.manual_seed(cfg.seed)
    np.random.default_rng(cfg.seed + 1)  # the test subset's seed
    from ncmse.train.schedule import measurement_epochs

    epochs = measurement_epochs(cfg.epochs)
    assert epochs[:2] == [0, 1] and epochs[-1] == 10**9 and epochs == sorted(set(epochs))


def test_seed_out_of_range_is_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncmse.cli import main

    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--set", "seed=99999999999999999999",
                 "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'seed'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
