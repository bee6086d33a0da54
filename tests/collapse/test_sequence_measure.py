"""``ncmse.measure`` on sequence models: features ``[B, T, p]``, labels ``[B, T]``, dict batches,
``ignore_index``, ``shift_labels`` and the LayerNorm note (issue 21 item 3)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import ncmse
from ncmse.errors import NCMSEWarning, ShapeError

V, T, B = 12, 9, 14  # vocabulary (classes), sequence length, sequences


def _tiny_gpt2():
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=V, n_positions=T, bos_token_id=0,
        eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def _token_data():
    """Right-padded sequences: ``attention_mask`` 0 at padding, whose labels are −100 in half the
    sequences and the pad token (0) in the other half (the mask alone must exclude those)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (B, T), generator=g)
    lengths = torch.randint(4, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # pad token 0
    labels = ids.clone()
    labels[::2][mask[::2] == 0] = -100
    return ids, mask, labels


def _reference_tokens(hidden, ids, mask, labels):
    """Features and classes selected by hand, position by position (float64)."""
    feats, ys = [], []
    for i in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[i, t] and mask[i, t + 1] and labels[i, t + 1] != -100:
                feats.append(hidden[i, t].numpy())
                ys.append(int(labels[i, t + 1]))
    return np.array(feats), np.array(ys)


def _nc1_reference(H: np.ndarray, y: np.ndarray) -> float:
    """nc1 = tr(Σ_W Σ_B^†)/C over the classes present, Σ_B = M̄ M̄ᵀ/C (SPEC §2)."""
    classes = np.unique(y)
    means = np.stack([H[y == c].mean(0) for c in classes])
    mbar = (means - means.mean(0)).T
    dev = np.concatenate([H[y == c] - H[y == c].mean(0) for c in classes])
    sigma_w = dev.T @ dev / len(y)
    sigma_b = mbar @ mbar.T / len(classes)
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-9)) / len(classes))


def test_causal_lm_dict_batches_match_an_independent_reference():
    model = _tiny_gpt2()
    ids, mask, labels = _token_data()
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(B)]
    loader = DataLoader(rows, batch_size=4)  # dicts of stacked tensors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NCMSEWarning)
        result = ncmse.measure(
            model, loader, classifier=model.lm_head, shift_labels=True, min_samples=1
        )
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        H, y = _reference_tokens(hidden.hidden_states[-1], ids, mask, labels)
        direct = ncmse.measure_features(
            torch.from_numpy(H), torch.from_numpy(y), model.lm_head.weight, None,
            num_classes=V, min_samples=1,
        )  # fmt: skip
    assert result.num_samples + result.num_samples_excluded == len(y)
    assert result.nc1 == pytest.approx(_nc1_reference(H, y), rel=1e-9)
    for name in ("nc1", "nc3", "nc4", "accuracy", "loss", "cdnv", "loss_perp"):
        assert getattr(result, name) == pytest.approx(getattr(direct, name), rel=1e-9), name


def test_layernorm_features_are_explained_once_per_measurement():
    model = _tiny_gpt2()
    ids, mask, labels = _token_data()
    batches = [{"input_ids": ids[i : i + 4], "attention_mask": mask[i : i + 4],
                "labels": labels[i : i + 4]} for i in range(0, B, 4)]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ncmse.measure(
            model, batches, classifier=model.lm_head, shift_labels=True, min_samples=1
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, NCMSEWarning)]
    notes = [m for m in messages if "LayerNorm 'transformer.ln_f'" in m]
    assert len(notes) == 1, messages  # one per measurement, not one per batch
    assert "within_class_singular" in result.flags  # the flag stays
    assert not any(m.startswith("ncmse: within_class_singular") for m in messages)


class _SeqMLP(nn.Module):
    """A sequence model without LayerNorm: features tanh(x A) [B, T, p]."""

    def __init__(self, d: int = 5, p: int = 6, c: int = 3) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(d, p), nn.Linear(p, c)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


def _sequence_tensors(n: int = 11):
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 3, (n, 7), generator=g)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)[y] + 0.5 * torch.randn(
        n, 7, 5, generator=g, dtype=torch.float64
    )
    y[0, :2] = -100
    y[3, 5:] = -100
    torch.manual_seed(3)
    return x, y, _SeqMLP().double()


def test_tensor_sequences_with_ignore_index_match_the_hidden_states():
    x, y, model = _sequence_tensors()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ncmse.measure(model, loader, lam=1e-3)  # classifier found by execution
    assert not [w for w in caught if "LayerNorm" in str(w.message)]  # negative control
    with torch.no_grad():
        feats = torch.tanh(model.body(x))
    keep = y != -100
    direct = ncmse.measure_features(feats[keep], y[keep], model.head.weight, model.head.bias,
                                    num_classes=3, lam=1e-3)  # fmt: skip
    assert result.num_samples == int(keep.sum())
    assert result.nc1 == pytest.approx(_nc1_reference(feats[keep].numpy(), y[keep].numpy()),
                                       rel=1e-9)  # fmt: skip
    assert result.loss == pytest.approx(direct.loss, rel=1e-12)
    assert result.nc4 == direct.nc4 and result.accuracy == direct.accuracy


def test_sampler_padding_is_dropped_by_sequence_not_by_position():
    x, y, model = _sequence_tensors(n=11)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, sampler=sampler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ncmse.measure(model, loader, distributed=False)
    assert not caught, [str(w.message) for w in caught]
    shard = torch.arange(1, 11, 2)  # rank 1 holds 1, 3, 5, 7, 9 and a padded copy of 0
    keep = y[shard] != -100
    assert result.num_samples == int(keep.sum())


def test_mismatched_labels_name_both_shapes_and_shift_labels():
    x, y, model = _sequence_tensors()
    with pytest.raises(ShapeError, match=r"\(11, 7, 6\).*\(11, 6\).*shift_labels"):
        ncmse.measure(model, [(x, y[:, 1:])])
    with pytest.raises(ShapeError, match="shift_labels=True needs sequence"):
        ncmse.measure(model, [(x[:, 0], y[:, 0])], shift_labels=True)


def test_other_warnings_pass_through_once_per_location():
    """The warnings held back during a measurement are re-emitted, and a repeated measurement in a
    loop shows a repeated warning once (Python's default), not once per call."""
    x, y, model = _sequence_tensors()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, drop_last=True)  # drops 3 samples
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for _ in range(3):
            ncmse.measure(model, loader)
    drops = [w for w in caught if "drop_last=True" in str(w.message)]
    assert len(drops) == 1
