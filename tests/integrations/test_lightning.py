"""``ncmse.integrations.lightning.NeuralCollapseCallback`` in real Lightning runs: one process and
DDP on 2 CPU processes (gloo) log the same, exact nc1, each sample once (issue 21 item 5)."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ncmse

L = pytest.importorskip("lightning")
from ncmse.integrations.lightning import NeuralCollapseCallback  # noqa: E402

C, N = 3, 45  # odd N: DistributedSampler pads one sample on 2 processes


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % C
    x = 2 * torch.randn(C, 4, generator=g)[y] + torch.randn(N, 4, generator=g)
    return TensorDataset(x, y)


class _Module(L.LightningModule):
    """An MLP with lr = 0: its weights stay those of the seed, so every run measures one model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, C))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), nn.functional.one_hot(y, C).float())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(tmp_path, devices: int, strategy: str = "auto", **callback) -> list[dict[str, str]]:
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run", version=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_epochs=2, logger=logger,
        callbacks=[NeuralCollapseCallback(**callback)],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    loader = DataLoader(_data(), batch_size=8, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers and log steps
        trainer.fit(_Module(), loader)
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    return [r for r in rows if r.get("nc/nc1")]


def _reference() -> ncmse.NCResult:
    module = _Module()
    x, y = _data().tensors
    with torch.no_grad():
        feats = module.net[:-1](x)
    head = module.net[-1]
    return ncmse.measure_features(feats, y, head.weight, head.bias, num_classes=C)


def test_one_process_logs_every_k_epochs_the_exact_values(tmp_path):
    rows = _fit(tmp_path, devices=1)
    ref = _reference()
    assert len(rows) == 2  # epochs 0 and 1
    for row in rows:
        assert float(row["nc/nc1"]) == pytest.approx(ref.nc1, rel=1e-6)
        assert float(row["nc/num_samples"]) == N
        assert float(row["nc/snr_1"]) == pytest.approx(ref.snr[0], rel=1e-6)
        assert float(row["nc/flag_within_class_singular"]) == 0.0


def test_every_n_epochs(tmp_path):
    rows = _fit(tmp_path, devices=1, every_n_epochs=2)
    assert [int(r["epoch"]) for r in rows] == [1]


def test_import_without_lightning_is_one_line_naming_the_install():
    code = (
        "import sys; sys.modules['lightning'] = None; sys.modules['lightning.pytorch'] = None;"
        "sys.modules['pytorch_lightning'] = None\n"
        "try:\n import ncmse.integrations.lightning\n"
        "except ImportError as e:\n print(str(e))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "ncmse.integrations.lightning needs Lightning: pip install lightning"
    )


@pytest.mark.slow
def test_ddp_on_two_processes_equals_one_process(tmp_path):
    ref = _reference()
    rows = _fit(tmp_path, devices=2, strategy="ddp_spawn")
    assert len(rows) == 2
    for row in rows:
        assert float(row["nc/num_samples"]) == N  # the padded duplicate is not counted
        assert float(row["nc/nc1"]) == pytest.approx(ref.nc1, rel=1e-6)
        assert float(row["nc/loss"]) == pytest.approx(ref.loss, rel=1e-6)
    # positive control: the padded data set (sample 0 twice) gives another nc1
    module = _Module()
    x, y = _data().tensors
    x, y = torch.cat([x, x[:1]]), torch.cat([y, y[:1]])
    with torch.no_grad():
        padded = ncmse.measure_features(module.net[:-1](x), y, module.net[-1].weight,
                                        module.net[-1].bias, num_classes=C)  # fmt: skip
    assert abs(padded.nc1 - ref.nc1) > 1e-3 * ref.nc1
