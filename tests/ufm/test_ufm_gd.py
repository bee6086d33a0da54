"""Plain gradient descent on the UFM (SPEC §5.1) and its measurements."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncmse.errors import DivergenceError, InputError
from ncmse.ufm import gd, model


@pytest.fixture(scope="module")
def run() -> gd.GDResult:
    state = gd.init_gd(8, 4, 6, seed=0)
    return gd.run_gd(state, lam=5e-3, lam_h=1e-3, lr=0.5, steps=3000,
                     record_steps=gd.log_steps(3000, 15))  # fmt: skip


def test_gradients_equal_autograd() -> None:
    state = gd.init_gd(5, 3, 4, seed=1)
    lam, lam_h = 0.03, 0.02
    J, gW, gb, gH = gd._gradients(state, lam, lam_h)
    W, b, H = (x.clone().requires_grad_(True) for x in (state.W, state.b, state.H))
    J_ref = model.full_loss(W, b, H, lam) + 0.5 * lam_h * (H**2).sum() / H[..., 0].numel()
    grads = torch.autograd.grad(J_ref, (W, b, H))
    assert abs(J - float(J_ref.detach())) < 1e-12
    for mine, ref in zip((gW, gb, gH), grads):
        assert float((mine - ref).norm() / ref.norm()) < 1e-10


def test_decomposition_identity_every_record(run: gd.GDResult) -> None:
    for row in run.records:
        total = row["loss_nc1"] + row["loss_nc23"] + row["loss_perp"]
        assert abs(row["loss"] - total) <= 1e-10 * row["loss"]
        assert row["lam"] == 5e-3


def test_gd_approaches_central_path_and_collapses(run: gd.GDResult) -> None:
    first, last = run.records[0], run.records[-1]
    assert run.steps[0] == 0 and run.steps[-1] == 3000
    objective = np.array([r["objective"] for r in run.records])
    assert np.all(np.diff(objective) <= 1e-12)
    assert last["loss_perp_ratio"] < 1e-3 * first["loss_perp_ratio"]
    assert last["nc1"] < 1e-3 * first["nc1"]
    assert last["accuracy"] == 1.0 and last["nc4"] == 0.0
    assert last["nc3"] < 1e-2
    assert run.lr_features == pytest.approx(0.5 * 32)


def test_divergent_learning_rate_detected() -> None:
    state = gd.init_gd(5, 3, 4, seed=0)
    with pytest.raises(DivergenceError, match="lr"):
        gd.run_gd(state, lam=1e-3, lr=50.0, steps=200, measure=False)


def test_bad_gd_arguments() -> None:
    state = gd.init_gd(5, 3, 4, seed=0)
    with pytest.raises(InputError, match="λ"):
        gd.run_gd(state, lam=-1.0, lr=0.1, steps=1)
    with pytest.raises(InputError, match="learning rate"):
        gd.run_gd(state, lam=0.0, lr=0.0, steps=1)
    with pytest.raises(InputError, match="p >= C - 1"):
        gd.init_gd(5, 10, 3)
