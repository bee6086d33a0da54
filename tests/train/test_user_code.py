"""``ncmse train`` with the user's own network and data: config ``model: "module:factory"`` and
``dataset: "module:loader"`` (issue 21 item 7)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ncmse.cli import main

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from ncmse.train.data import DatasetBundle

    CALLS = []


    def build(*, num_classes, in_channels, image_size, width=4):
        CALLS.append(width)
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, width),
                             nn.ReLU(), nn.Linear(width, num_classes))


    def build_aux_last(*, num_classes, in_channels, image_size):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 6))
                self.fc = nn.Linear(6, num_classes)
                self.aux = nn.Linear(6, 2)  # defined last, never the output

            def forward(self, x):
                return self.fc(torch.relu(self.body(x)))

        return Net()


    def load(*, data_dir, download, per_class, test_per_class, seed):
        g = torch.Generator().manual_seed(seed)
        def split(n):
            y = torch.arange(n) % 3
            x = 3 * torch.randn(3, 1, 4, 4, generator=g)[y] + torch.randn(n, 1, 4, 4, generator=g)
            return x, y
        train_x, train_y = split(63)
        test_x, test_y = split(30)
        return DatasetBundle(name="blobs", num_classes=3, in_channels=1, image_size=4,
                             train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                             mean=torch.zeros(1, 4, 4), std=torch.ones(1, 4, 4), balanced=True)


    def not_a_bundle(**kwargs):
        return {"train_x": None}
    """
)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "usernets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("usernets", None)
    return folder


def _train(out: Path, *sets: str) -> int:
    args = ["train", "--config", "tiny", "--set", "epochs=2", "--set", "measure_test=false"]
    for item in sets:
        args += ["--set", item]
    return main([*args, "--out", str(out)])


def test_user_model_and_dataset_are_trained_and_measured(user_module: Path, tmp_path: Path):
    out = tmp_path / "run"
    code = _train(out, "model=usernets:build", "dataset=usernets:load", "model_kwargs={width: 5}")
    assert code == 0
    import usernets

    assert usernets.CALLS and set(usernets.CALLS) == {5}  # the factory, with model_kwargs
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and all(r["num_samples"] == "63" and r["num_classes"] == "3" for r in rows)
    assert "usernets:build" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model=nosuchpkg.nets:build", "importing 'nosuchpkg.nets' failed (ModuleNotFoundError"),
        ("model=usernets:nothere", "module 'usernets' has no attribute 'nothere'"),
        ("dataset=usernets:not_a_bundle", "must return an ncmse.train.data.DatasetBundle"),
        ("model=usernets:build_aux_last", "not the last nn.Linear"),
        ("model=usernets:a:b", "neither a built-in name nor 'package.module:attribute'"),
    ],
)
def test_errors_name_the_import_and_exit_2(user_module, tmp_path, capsys, setting, message):
    extra = [] if setting.startswith("dataset") else ["dataset=usernets:load"]
    assert _train(tmp_path / "run", setting, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in err), err
    assert not (tmp_path / "run").exists()  # nothing locked or half-written


@pytest.mark.slow
def test_cli_subprocess_with_pythonpath(user_module: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_module), *sys.path])}
    base = [sys.executable, "-m", "ncmse", "train", "--config", "tiny", "--set", "epochs=1",
            "--set", "dataset=usernets:load", "--out", str(tmp_path / "run")]  # fmt: skip
    ok = subprocess.run([*base, "--set", "model=usernets:build"], env=env, capture_output=True,
                        text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*base, "--set", "model=missing_mod:f", "--overwrite"], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2
    assert "importing 'missing_mod' failed" in bad.stderr
    assert "Traceback" not in bad.stderr
