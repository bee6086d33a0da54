"""``ncmse.integrations.transformers.NeuralCollapseCallback`` in a real Hugging Face ``Trainer``
run on a tiny randomly initialised GPT-2 (no downloads; issue 21 item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
from ncmse.integrations.transformers import NeuralCollapseCallback  # noqa: E402

V, T, N = 11, 8, 13  # vocabulary, sequence length, sequences


def _model():
    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=V, n_positions=T, bos_token_id=0,
        eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def _dataset():
    g = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(N):
        length = int(torch.randint(3, T + 1, (1,), generator=g))
        ids = torch.zeros(T, dtype=torch.long)
        ids[:length] = torch.randint(1, V, (length,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": (torch.arange(T) < length).long()})
    return rows


def _collate(rows):
    ids = torch.stack([r["input_ids"] for r in rows])
    mask = torch.stack([r["attention_mask"] for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _train(tmp_path, **callback):
    model = _model()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4,
        learning_rate=1e-2, report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_dataset(), data_collator=_collate
    )
    callback = NeuralCollapseCallback(trainer, **callback)
    trainer.add_callback(callback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "nc/nc1" in entry]
    return model, logs, callback


def _reference_nc1(model) -> tuple[float, int]:
    """nc1 over the next-token classes present, from the hidden states (float64, by hand)."""
    batch = _collate(_dataset())
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True)  # fmt: skip
    hidden = out.hidden_states[-1].double().numpy()
    labels, mask = batch["labels"], batch["attention_mask"]
    H, y = [], []
    for i in range(N):
        for t in range(T - 1):
            if mask[i, t] and mask[i, t + 1] and labels[i, t + 1] != -100:
                H.append(hidden[i, t])
                y.append(int(labels[i, t + 1]))
    H, y = np.array(H), np.array(y)
    classes = np.unique(y)
    means = np.stack([H[y == c].mean(0) for c in classes])
    mbar = (means - means.mean(0)).T
    dev = np.concatenate([H[y == c] - H[y == c].mean(0) for c in classes])
    sigma_w, sigma_b = dev.T @ dev / len(y), mbar @ mbar.T / len(classes)
    nc1 = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-5)) / len(classes)
    return float(nc1), len(y)


def test_logs_once_per_epoch_and_matches_the_hidden_states(tmp_path):
    model, logs, callback = _train(tmp_path)
    assert [round(entry["epoch"]) for entry in logs] == [1, 2]
    assert all(type(v) is float for k, v in logs[-1].items() if k.startswith("nc/"))
    nc1, tokens = _reference_nc1(model)  # the last measurement is of the final weights
    assert logs[-1]["nc/num_samples"] + logs[-1]["nc/num_samples_excluded"] == tokens
    assert logs[-1]["nc/nc1"] == pytest.approx(nc1, rel=1e-3)  # float32 hidden states
    assert callback.last_result.nc1 == logs[-1]["nc/nc1"]
    assert logs[0]["nc/nc1"] != logs[-1]["nc/nc1"]  # measured after each epoch, not once


def test_every_n_steps(tmp_path):
    _, logs, _ = _train(tmp_path, every_n_steps=2)
    assert [entry["step"] for entry in logs] == [2, 4, 6, 8]  # ⌈13/4⌉ = 4 steps per epoch, 2 epochs


def test_the_trainer_is_required():
    with pytest.raises(Exception, match="NeuralCollapseCallback\\(trainer"):
        NeuralCollapseCallback(None)


def test_import_without_transformers_is_one_line_naming_the_install():
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "try:\n import ncmse.integrations.transformers\n"
        "except ImportError as e:\n print(str(e))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "ncmse.integrations.transformers needs transformers: pip install transformers"
    assert out.stdout.strip() == expected


def test_several_processes_need_a_loader():
    """Accelerate's training dataloader may repeat samples across processes: refused up front."""
    from ncmse.errors import InputError

    class Args:
        world_size = 2

    class FakeTrainer:
        def log(self, logs):
            pass

    callback = NeuralCollapseCallback(FakeTrainer())
    with pytest.raises(InputError, match="2 processes .* pass NeuralCollapseCallback"):
        callback.on_train_begin(Args(), None, None)
    Args.world_size = 1  # negative control: one process measures the Trainer's dataloader
    assert callback.on_train_begin(Args(), None, "control") == "control"
    given = NeuralCollapseCallback(FakeTrainer(), loader=[])
    Args.world_size = 2
    assert given.on_train_begin(Args(), None, "control") == "control"
