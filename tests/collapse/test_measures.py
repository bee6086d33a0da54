"""The measurement core against brute force, theory and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ncmse
from ncmse.collapse import lstsq
from ncmse.collapse.stats import ClassStats, merge
from ncmse.errors import (
    EmptyClassError,
    EmptyDataError,
    InputError,
    LabelError,
    NCMSEError,
    NonFiniteError,
    ShapeError,
    SingularCovarianceError,
)
from reference_impl import geometry, mse_loss, ridge_ls

GEOMETRY = (
    "nc1", "nc1_trace_ratio", "cdnv", "equinorm_means", "equinorm_classifier",
    "equiangular_means", "equiangular_classifier", "maxangle_means", "maxangle_classifier",
    "nc3", "nc4", "accuracy", "etf_error_means", "etf_error_wm",
)  # fmt: skip


def make_data(counts, p, *, spread=1.0, seed=0, dtype=torch.float64):
    """Gaussian classes: means ~ N(0, 4 I), within-class noise ~ spread · N(0, Σ) (anisotropic)."""
    g = torch.Generator().manual_seed(seed)
    C = len(counts)
    means = 2.0 * torch.randn(C, p, generator=g, dtype=torch.float64)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=g)]
    mix = torch.randn(p, p, generator=g, dtype=torch.float64) / math.sqrt(p)
    H = means[y] + spread * torch.randn(len(y), p, generator=g, dtype=torch.float64) @ mix
    W = torch.randn(C, p, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64)
    return H.to(dtype), y, W, b


def simplex_etf(C, p, scale=3.0):
    """C unit-norm equiangular vectors in R^p (p ≥ C), as rows [C, p]."""
    M = torch.eye(C, dtype=torch.float64) - 1.0 / C
    M = M / M.norm(dim=1, keepdim=True)
    Q, _ = torch.linalg.qr(
        torch.randn(p, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    return scale * M @ Q.T


# ----------------------------------------------------------------------------- brute force
@pytest.mark.parametrize(
    "counts,p", [([40] * 4, 6), ([25, 60, 33, 47, 52], 8), ([30] * 6, 3), ([20, 35, 28], 12)]
)
def test_metrics_match_brute_force(counts, p):
    C = len(counts)
    H, y, W, b = make_data(counts, p, seed=len(counts) + p)
    r = ncmse.measure_features(H, y, W, b, num_classes=C, lam=0.05)
    ref = geometry(H.numpy(), y.numpy(), W.numpy(), b.numpy(), C)
    for name in GEOMETRY:
        assert getattr(r, name) == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name
    np.testing.assert_allclose(r.snr, ref["snr"], rtol=1e-9)
    assert r.nc1_unnormalized == pytest.approx(C * r.nc1, rel=1e-12)
    assert r.loss == pytest.approx(mse_loss(H, y, W, b, C, 0.05), rel=1e-12)
    assert r.balanced == (len(set(counts)) == 1)
    assert r.num_samples == sum(counts) and r.num_classes == C


@pytest.mark.parametrize("counts", [[50] * 5, [20, 70, 45, 33, 61]])
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.7])
def test_ls_classifier_is_ridge_solution(counts, lam):
    C, p = len(counts), 7
    H, y, *_ = make_data(counts, p, seed=3)
    stats = ClassStats(C, p)
    stats.update(H, y)
    n, mu, _, within = stats.centred()
    m = lstsq.Moments(n / n.sum(), mu, within / n.sum(), int(n.sum()))
    W_ls, b_ls = lstsq.ls_classifier(m, lam)
    W_ref, b_ref = ridge_ls(H.numpy(), y.numpy(), C, lam)
    np.testing.assert_allclose(W_ls.numpy(), W_ref, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(b_ls.numpy(), b_ref, rtol=1e-9, atol=1e-11)
    dec = lstsq.decompose(m, W_ls, b_ls, lam)
    assert dec.loss_perp == pytest.approx(0.0, abs=1e-14)
    assert dec.loss == pytest.approx(dec.loss_ls, rel=1e-12)


@pytest.mark.parametrize("counts", [[60] * 4, [15, 80, 40, 52]])
def test_webb_lowe_equals_torch_lstsq(counts):
    C, p = len(counts), 9
    H, y, *_ = make_data(counts, p, seed=5)
    stats = ClassStats(C, p)
    stats.update(H, y)
    n, mu, _, within = stats.centred()
    W_ls, b_ls = lstsq.ls_classifier(lstsq.Moments(n / n.sum(), mu, within / n.sum(), len(y)))
    Ht = torch.cat([H, torch.ones(len(y), 1, dtype=H.dtype)], dim=1)
    X = torch.linalg.lstsq(Ht, torch.eye(C, dtype=H.dtype)[y]).solution.T
    torch.testing.assert_close(W_ls, X[:, :-1], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(b_ls, X[:, -1], rtol=1e-9, atol=1e-11)
    if len(set(counts)) == 1:  # Webb & Lowe's closed form: W = (1/C) M̄ᵀ Σ_T⁻¹, b = 1/C − W μ_G
        muG = H.mean(0)
        Sigma_T = (H - muG).T @ (H - muG) / len(y)
        W_wl = torch.linalg.solve(Sigma_T, (mu - muG).T).T / C
        torch.testing.assert_close(W_ls, W_wl, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(b_ls, 1.0 / C - W_wl @ muG, rtol=1e-9, atol=1e-11)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    C=st.integers(2, 6),
    p=st.integers(1, 10),
    lam=st.sampled_from([0.0, 1e-6, 1e-2, 1.0, 50.0]),
    balanced=st.booleans(),
)
def test_decomposition_identity(seed, C, p, lam, balanced):
    rng = np.random.default_rng(seed)
    counts = [12] * C if balanced else list(rng.integers(3, 30, size=C))
    H, y, W, b = make_data(counts, p, seed=seed)
    W = W * float(rng.uniform(0.01, 10))
    r = ncmse.measure_features(H, y, W, b, num_classes=C, lam=lam)
    total = r.loss_nc1 + r.loss_nc23 + r.loss_perp
    assert abs(r.loss - total) <= 1e-10 * r.loss
    assert r.loss == pytest.approx(mse_loss(H, y, W, b, C, lam), rel=1e-10)
    assert r.loss_perp >= 0 and r.loss_nc1 >= 0 and r.loss_nc23 >= 0
    assert r.loss_ls == pytest.approx(r.loss_nc1 + r.loss_nc23, rel=1e-14)


def test_closed_forms_in_omega_at_lambda_zero():
    C, p = 5, 8
    H, y, W, b = make_data([70] * C, p, spread=1.5, seed=11)
    r = ncmse.measure_features(H, y, W, b, num_classes=C, lam=0.0)
    w2 = np.asarray(r.snr) ** 2
    assert len(w2) == C - 1
    assert r.loss_ls == pytest.approx(0.5 * np.sum(1 / (C + w2)), rel=1e-10)
    assert r.loss_nc1 == pytest.approx(0.5 * np.sum(w2 / (C + w2) ** 2), rel=1e-10)
    assert r.loss_nc23 == pytest.approx(C / 2 * np.sum(1 / (C + w2) ** 2), rel=1e-10)
    # in whitened coordinates X = Σ_W^{-1/2} h, nc1 = Σ ω⁻² (SPEC §2); ω itself is invariant
    mu = torch.stack([H[y == c].mean(0) for c in range(C)])
    Z = H - mu[y]
    evals, Q = torch.linalg.eigh(Z.T @ Z / len(y))
    X = H @ (Q @ torch.diag(evals**-0.5) @ Q.T)
    rw = ncmse.measure_features(X, y, W, b, num_classes=C, lam=0.0)
    assert rw.nc1 == pytest.approx(np.sum(1 / w2), rel=1e-9)
    np.testing.assert_allclose(rw.snr, r.snr, rtol=1e-9)


def test_exact_simplex_etf_gives_zero():
    C, p, n = 5, 8, 6
    mu = simplex_etf(C, p)
    y = torch.arange(C).repeat_interleave(n)
    H = mu[y] + 1.7  # global translation: still an ETF about μ_G
    W = 0.4 * (mu - mu.mean(0))  # classifier ∝ M̄ᵀ (NC3)
    with pytest.warns(ncmse.NCMSEWarning, match="within_class_singular"):  # Σ_W = 0
        r = ncmse.measure_features(
            H, y, W, -W @ torch.full((p,), 1.7, dtype=H.dtype), num_classes=C, lam=1e-3
        )
    assert r.flags == ("within_class_singular",)
    for name in (
        "nc1",
        "equinorm_means",
        "equinorm_classifier",
        "equiangular_means",
        "equiangular_classifier",
        "maxangle_means",
        "maxangle_classifier",
        "nc3",
        "nc4",
        "etf_error_means",
        "etf_error_wm",
    ):
        assert abs(getattr(r, name)) <= 1e-10, name
    assert r.accuracy == 1.0
    assert all(math.isinf(w) for w in r.snr)


# ------------------------------------------------------------------------------ invariances
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 20.0), shift=st.floats(-5.0, 5.0))
def test_invariances(seed, scale, shift):
    C, p = 4, 6
    H, y, W, b = make_data([30, 25, 40, 35], p, seed=seed)
    base = ncmse.measure_features(H, y, W, b, num_classes=C, lam=0.0).to_dict()
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    c = shift * torch.randn(p, generator=g, dtype=torch.float64)
    perm = torch.randperm(C, generator=g)
    inv = torch.argsort(perm)
    variants = {
        "rotation": (H @ Q.T, y, W @ Q.T, b),
        "translation": (H + c, y, W, b - W @ c),
        "scaling": (scale * H, y, W / scale, b),
        "permutation": (H, inv[y], W[perm], b[perm]),
    }
    # λ = 0: decomposition and SNR are invariant too (SPEC §4)
    names = [*GEOMETRY, "loss", "loss_nc1", "loss_nc23", "loss_perp", "nc1_unnormalized"]
    for kind, (H2, y2, W2, b2) in variants.items():
        r = ncmse.measure_features(H2, y2, W2, b2, num_classes=C, lam=0.0).to_dict()
        for name in names:
            assert r[name] == pytest.approx(base[name], rel=1e-7, abs=1e-9), (kind, name)
        np.testing.assert_allclose(r["snr"], base["snr"], rtol=1e-7, err_msg=kind)


def test_general_affine_map_preserves_lambda_zero_quantities():
    C, p = 4, 5
    H, y, W, b = make_data([40] * C, p, seed=2)
    A = torch.randn(p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) + 3 * (
        torch.eye(p, dtype=torch.float64)
    )
    r0 = ncmse.measure_features(H, y, W, b, num_classes=C)
    r1 = ncmse.measure_features(H @ A.T + 1.0, y, W, b, num_classes=C)
    assert r1.loss_ls == pytest.approx(r0.loss_ls, rel=1e-9)
    assert r1.loss_nc1 == pytest.approx(r0.loss_nc1, rel=1e-9)
    np.testing.assert_allclose(r1.snr, r0.snr, rtol=1e-9)
    assert r1.nc1 != pytest.approx(r0.nc1, rel=1e-3)  # raw-coordinate nc1 is not invariant


# ------------------------------------------------------------------------------- streaming
def _stream(H, y, batch):
    return [(H[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]


def test_streaming_batches_agree():
    C, p = 5, 7
    H, y, W, b = make_data([21, 34, 17, 40, 28], p, seed=4, dtype=torch.float32)
    results = [
        ncmse.measure_stream(_stream(H, y, bs), W, b, num_classes=C, lam=0.01).to_dict()
        for bs in (1, 7, len(y))
    ]
    for r in results[1:]:
        for k, v in results[0].items():
            if isinstance(v, float):
                assert r[k] == pytest.approx(v, rel=1e-10, abs=1e-13), k
        np.testing.assert_allclose(r["snr"], results[0]["snr"], rtol=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), cut=st.floats(0.0, 1.0))
def test_merge_equals_one_shot(seed, cut):
    C, p = 4, 5
    H, y, *_ = make_data([20, 30, 25, 15], p, seed=seed)
    k = int(cut * len(y))
    one = ClassStats(C, p)
    one.update(H, y)
    a, b_ = ClassStats(C, p), ClassStats(C, p)
    a.update(H[:k], y[:k])
    b_.update(H[k:], y[k:])
    m = merge(a, b_)
    for x, z in zip(one.centred(), m.centred()):
        torch.testing.assert_close(x, z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.class_means(), one.class_means(), rtol=1e-12, atol=1e-12)


def test_collapsed_float32_features_are_exact():
    """Within-class spread 1e-4 of the between-class distance, float32 input (SPEC §8)."""
    C, p = 10, 32
    g = torch.Generator().manual_seed(0)
    mu = 1.0 * torch.randn(C, p, generator=g, dtype=torch.float64) + 5.0  # large common offset
    y = torch.arange(C).repeat(400)
    H64 = mu[y] + 1e-4 * torch.randn(len(y), p, generator=g, dtype=torch.float64)
    H32 = H64.float()
    W = torch.randn(C, p, generator=g)
    ref = geometry(H32.double().numpy(), y.numpy(), W.double().numpy(), np.zeros(C), C)["nc1"]
    r = ncmse.measure_stream(_stream(H32, y, 128), W, None, num_classes=C, lam=1e-3)
    assert r.nc1 == pytest.approx(ref, rel=1e-6)
    # the textbook raw second-moment formula Σhhᵀ − Nμμᵀ on the same float32 stream fails
    S = torch.zeros(p, p)
    s = torch.zeros(C, p)
    for hb, yb in _stream(H32, y, 128):
        S += hb.T @ hb
        s.index_add_(0, yb, hb)
    n = torch.bincount(y, minlength=C).float()
    m = s / n[:, None]
    Sw_raw = ((S - m.T @ (n[:, None] * m)) / len(y)).double()
    mbar = (m - m.mean(0)).T.double()
    raw_nc1, _ = ncmse.collapse.geometry.nc1(Sw_raw, mbar)
    assert abs(raw_nc1 - ref) / ref > 1e-2


# --------------------------------------------------------------------------- model + loader
def _mlp(p=6, C=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.ReLU(), torch.nn.Linear(16, p),
        torch.nn.Tanh(), torch.nn.Linear(p, C),
    )  # fmt: skip


def test_measure_model_matches_features_and_restores_mode():
    model = _mlp()
    model.train()
    X = torch.randn(90, 4, generator=torch.Generator().manual_seed(3))
    y = torch.arange(90) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16)
    r = ncmse.measure(model, loader, lam=0.01)
    assert model.training
    with torch.no_grad():
        model.eval()
        feats = model[:-1](X)
    ref = ncmse.measure_features(
        feats, y, model[-1].weight, model[-1].bias, num_classes=3, lam=0.01
    )
    for k, v in ref.to_dict().items():
        if isinstance(v, float):
            assert r.to_dict()[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    assert r.nc4_method == "cache"
    r2 = ncmse.measure(model, loader, lam=0.01, memory_budget_bytes=0)
    assert r2.nc4_method == "second_pass" and r2.nc4 == r.nc4


def test_single_use_stream_over_budget_errors():
    H, y, W, b = make_data([10] * 3, 4)
    gen = (batch for batch in _stream(H, y, 5))
    with pytest.raises(InputError, match="memory_budget_bytes"):
        ncmse.measure_stream(gen, W, b, num_classes=3, memory_budget_bytes=0)
    r = ncmse.measure_stream(
        lambda: iter(_stream(H, y, 5)), W, b, num_classes=3, memory_budget_bytes=0
    )
    assert r.nc4_method == "second_pass"


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs():
    H, y, W, b = make_data([10] * 3, 4)
    kw = {"num_classes": 3}
    with pytest.raises(LabelError, match=r"\[0, 3\)"):
        ncmse.measure_features(H, torch.where(y == 2, 3, y), W, b, **kw)
    with pytest.raises(LabelError, match="integers"):
        ncmse.measure_features(H, y.float(), W, b, **kw)
    with pytest.raises(NonFiniteError, match="NaN"):
        ncmse.measure_features(torch.where(H > 2, float("nan"), H), y, W, b, **kw)
    for bad in (float("nan"), float("inf"), -float("inf")):  # streamed: caught via the sums
        H_bad = H.clone()
        H_bad[17, 2] = bad
        with pytest.raises(NonFiniteError, match="NaN or Inf"):
            ncmse.measure_stream(_stream(H_bad, y, 4), W, b, **kw)
    with pytest.raises(ShapeError, match="labels"):
        ncmse.measure_features(H, y[:-1], W, b, **kw)
    with pytest.raises(ShapeError, match="W has"):
        ncmse.measure_features(H, y, W[:, :-1], b, **kw)
    with pytest.raises(ShapeError, match="b must"):
        ncmse.measure_features(H, y, W, b[:-1], **kw)
    with pytest.raises(EmptyClassError, match="class"):
        ncmse.measure_features(H[y != 1], y[y != 1], W, b, **kw)
    with pytest.raises(InputError, match="num_classes"):
        ncmse.measure_features(H, y * 0, W[:1], b[:1], num_classes=1)
    with pytest.raises(InputError, match="lam"):
        ncmse.measure_features(H, y, W, b, lam=-1.0, **kw)
    Hs, ys, Ws, bs = make_data([3] * 3, 10)  # N = 9 < p + 1: Σ_T singular
    with pytest.warns(ncmse.NCMSEWarning, match="within_class_singular"):
        r = ncmse.measure_features(Hs, ys, Ws, bs, **kw)
    # the LS classifier is not unique, but L_LS is: 0 here (N ≤ p + 1 points are interpolated)
    assert r.loss_ls == pytest.approx(0.0, abs=1e-12)
    assert r.loss == pytest.approx(r.loss_nc1 + r.loss_nc23 + r.loss_perp, rel=1e-10)
    with pytest.warns(ncmse.NCMSEWarning, match="within_class_singular"):
        assert ncmse.measure_features(Hs, ys, Ws, bs, lam=0.1, **kw).loss > 0
    with pytest.raises(EmptyDataError):
        ncmse.measure(_mlp(), [], num_classes=3)
    with pytest.raises(EmptyDataError):
        ncmse.measure_features(H[:0], y[:0], W, b, **kw)
    assert issubclass(SingularCovarianceError, NCMSEError)


def test_float16_is_upcast_and_p_below_c_is_legal():
    H, y, W, b = make_data([30] * 5, 2, seed=8)  # p = 2 < C − 1 = 4
    r = ncmse.measure_features(H.half(), y, W, b, num_classes=5, lam=0.0)
    ref = geometry(H.half().double().numpy(), y.numpy(), W.numpy(), b.numpy(), 5)
    assert r.nc1 == pytest.approx(ref["nc1"], rel=1e-9)
    assert len(r.snr) == 2


def test_lambda_for():
    assert lstsq.lambda_for(weight_decay=5e-4, num_classes=10) == pytest.approx(2.5e-3)
    assert lstsq.lambda_for("mse", "sum_classes", weight_decay=5e-4, num_classes=10) == 2.5e-4
    assert lstsq.lambda_for("mse", "half_sum_classes", weight_decay=1e-3, num_classes=10) == 1e-3
    assert lstsq.lambda_for(
        "mse", "sum", weight_decay=1e-3, num_classes=10, batch_size=100
    ) == pytest.approx(5e-6)
    with pytest.raises(InputError, match="batch_size"):
        lstsq.lambda_for("mse", "sum", weight_decay=1e-3, num_classes=10)
    with pytest.raises(InputError, match="reduction"):
        lstsq.lambda_for("mse", "avg", weight_decay=1e-3, num_classes=10)


def test_lambda_for_matches_nn_mseloss_gradient():
    """The objective nn.MSELoss()+wd/2‖θ‖² is (2/C)·L at λ = C·wd/2: equal gradients up to 2/C."""
    C, p, wd = 4, 5, 0.03
    H, y, W, b = make_data([10] * C, p, seed=6)
    lam = lstsq.lambda_for(weight_decay=wd, num_classes=C)
    W1, b1 = W.clone().requires_grad_(), b.clone().requires_grad_()
    obj = torch.nn.functional.mse_loss(H @ W1.T + b1, torch.eye(C, dtype=H.dtype)[y])
    obj = obj + wd / 2 * (W1.square().sum() + b1.square().sum())
    obj.backward()
    W2, b2 = W.clone().requires_grad_(), b.clone().requires_grad_()
    E = torch.eye(C, dtype=H.dtype)[y]
    L = 0.5 * ((H @ W2.T + b2 - E) ** 2).sum(1).mean() + lam / 2 * (
        W2.square().sum() + b2.square().sum()
    )
    L.backward()
    torch.testing.assert_close(W1.grad, 2 / C * W2.grad)
    torch.testing.assert_close(b1.grad, 2 / C * b2.grad)


# ------------------------------------------------------------------ ties in the decisions
def _tied_ncc_problem(C=8, p=5, seed=0, offset=0.0):
    """The nearest-class-mean classifier itself (W = μ_c, b = −½‖μ_c‖²) on data with samples on
    every bisector ½(μ_i + μ_j) (each balanced by 2μ_i − ½(μ_i + μ_j), so the class means stay
    μ_c up to rounding): the two decisions tie exactly on the bisectors."""
    g = torch.Generator().manual_seed(seed)
    mu = offset + torch.randn(C, p, generator=g, dtype=torch.float64)
    H, y = [], []
    for c in range(C):
        d = torch.randn(6, p, generator=g, dtype=torch.float64)
        H += [mu[c] + d, mu[c] - d]
        y += [c] * 12
    for i in range(C):
        for j in range(C):
            if i != j:
                m = 0.5 * (mu[i] + mu[j])
                H += [m.unsqueeze(0), (2 * mu[i] - m).unsqueeze(0)]
                y += [i, i]
    return torch.cat(H), torch.tensor(y), mu.clone(), -0.5 * (mu * mu).sum(dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_the_ncc_classifier_has_no_nc4_mismatch_on_bisectors(seed, offset):
    H, y, W, b = _tied_ncc_problem(seed=seed, offset=offset)
    r = ncmse.measure_features(H, y, W, b, num_classes=8)
    assert r.nc4 == 0.0
    ref = geometry(H.numpy(), y.numpy(), W.numpy(), b.numpy(), 8)
    assert ref["nc4"] == 0.0
    # a bisector sample labelled i is tied between i and j: credit ½ each, as the reference
    assert r.accuracy == pytest.approx(ref["accuracy"], rel=1e-15)
    # positive control: a classifier that is not the NCC (biases moved) disagrees with it
    b2 = b + 0.5 * torch.arange(8.0, dtype=torch.float64)
    shifted = ncmse.measure_features(H, y, W, b2, num_classes=8)
    assert shifted.nc4 > 0.0
    assert shifted.nc4 == geometry(H.numpy(), y.numpy(), W.numpy(), b2.numpy(), 8)["nc4"]


def _three_means_on_a_line(middle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """C = 3 balanced classes with class means (−1, 0), (middle, 0), (1, 0) up to rounding."""
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[-1.0, 0.0], [middle, 0.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.arange(3).repeat(20)
    z = 0.1 * torch.randn(60, 2, generator=g, dtype=torch.float64)
    z = z - torch.stack([z[y == c].mean(0) for c in range(3)])[y]
    return mu[y] + z, y


@pytest.mark.filterwarnings("ignore::ncmse.NCMSEWarning")
def test_a_class_mean_at_the_global_mean_has_no_angle():
    """μ_c − μ_G = 0 up to rounding: its cosine with the other means is the direction of the
    rounding (it gave equiangular_means 0.60 and maxangle_means 0.50 with no word); NaN with the
    flag. Controls: a small but real centred mean keeps its (reference) angles, unflagged."""
    H, y = _three_means_on_a_line(0.0)
    W = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = ncmse.measure_features(H, y, W, None, num_classes=3)
    assert "class_mean_at_global_mean" in r.flags
    assert math.isnan(r.equiangular_means) and math.isnan(r.maxangle_means)
    assert math.isfinite(r.nc1) and math.isfinite(r.equinorm_means)  # the rest keeps its value
    H, y = _three_means_on_a_line(1e-3)  # centred means (−1, 1e-3, 1) − μ_G: all of them real
    r = ncmse.measure_features(H, y, W, None, num_classes=3)
    assert "class_mean_at_global_mean" not in r.flags
    m = torch.stack([H[y == c].mean(0) for c in range(3)])
    m = m - m.mean(0)
    cos = [float(m[a] @ m[b] / (m[a].norm() * m[b].norm())) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert r.maxangle_means == pytest.approx(sum(abs(c + 0.5) for c in cos) / 3, rel=1e-9)
