"""Numerical requirements and degenerate features of SPEC §2 (issue 9): properties of the public
measurement API against independent float64 / mpmath references."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ncmse
from ncmse.collapse import geometry as ncmse_geometry
from ncmse.collapse import lstsq
from ncmse.collapse.result import METRIC_NAMES, flatten_row
from ncmse.collapse.stats import ClassStats, merge
from ncmse.errors import InputError
from reference_impl import geometry, mp_decomposition

#: every scalar §2 metric that is invariant under translation, scaling, rotation, permutation
SCALE_FREE = (
    "nc1", "nc1_unnormalized", "nc1_trace_ratio", "cdnv", "equinorm_means", "equinorm_classifier",
    "equiangular_means", "equiangular_classifier", "maxangle_means", "maxangle_classifier",
    "nc3", "nc4", "accuracy", "etf_error_means", "etf_error_wm",
)  # fmt: skip
DECOMPOSITION = ("loss", "loss_nc1", "loss_nc23", "loss_perp", "loss_ls")


def clusters(seed, C, p, *, n=None, spread=1.0, sep=3.0, imbalanced=False):
    """Gaussian classes in float64 with anisotropic noise; classifier near the LS one (so that
    the decisions are not all one class) plus noise."""
    rng = np.random.default_rng(seed)
    counts = (
        rng.integers(max(8, 2 * p), max(40, 4 * p), size=C) if imbalanced else np.full(C, n or 25)
    )
    y = torch.as_tensor(np.repeat(np.arange(C), counts))
    y = y[torch.as_tensor(rng.permutation(len(y)))]
    mu = torch.as_tensor(sep * rng.standard_normal((C, p)))
    mix = torch.as_tensor(0.3 * rng.standard_normal((p, p)) / math.sqrt(p) + np.eye(p))
    H = mu[y] + spread * torch.as_tensor(rng.standard_normal((len(y), p))) @ mix
    W = mu - mu.mean(0) + 0.3 * sep * torch.as_tensor(rng.standard_normal((C, p)))
    b = torch.as_tensor(rng.standard_normal(C))
    return H, y, W / sep**2, b


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ncmse.NCMSEWarning)
        return fn(*args, **kwargs)


def assert_close(r, ref, names, rel, abs_=0.0, what=""):
    for name in names:
        a, e = getattr(r, name), getattr(ref, name)
        assert a == pytest.approx(e, rel=rel, abs=abs_), (what, name, a, e)


# ------------------------------------------------------------------------------ translation
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    C=st.integers(2, 6),
    p=st.integers(1, 9),
    log_offset=st.floats(0.0, 4.0),
    between=st.booleans(),
    imbalanced=st.booleans(),
)
def test_translation_by_large_offsets(seed, C, p, log_offset, between, imbalanced):
    """Offsets up to 1e4 × the spread change no §2 metric (and no §3 one at λ = 0, b − W c) by
    more than 1e-8 relative (SPEC §2 numerical requirements; issue 9 items 3–6)."""
    spread = 1e-3
    H, y, W, b = clusters(seed, C, p, spread=spread, sep=spread * 3, imbalanced=imbalanced)
    W = W * spread**2
    rng = np.random.default_rng(seed + 1)
    scale = float(H.std()) if between else spread
    c = torch.as_tensor(rng.standard_normal(p))
    c = c / c.norm() * scale * 10**log_offset
    kw = {"num_classes": C, "lam": 0.0}
    base = quiet(ncmse.measure_features, H, y, W, b, **kw)
    moved = quiet(ncmse.measure_features, H + c, y, W, b - W @ c, **kw)
    assert moved.flags == base.flags
    # abs: metrics that are 0 by construction (equinorm of C = 2 means) show rounding there
    assert_close(moved, base, SCALE_FREE, rel=1e-8, abs_=1e-10, what="§2")
    np.testing.assert_allclose(moved.snr, base.snr, rtol=1e-8)
    assert_close(moved, base, DECOMPOSITION, rel=1e-8, abs_=1e-12 * base.loss, what="§3")


@pytest.mark.parametrize("offset", [1e2, 1e4, 1e5])
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.5])
def test_decomposition_matches_mpmath_at_large_offsets(offset, lam):
    """With λ > 0 translation changes §3 legitimately; it must still match a 60-digit evaluation
    of the §3 formulas on the same float64 features to 1e-8 relative."""
    C, p = 3, 3
    H, y, W, b = clusters(7, C, p, n=12, spread=1.0, sep=2.0, imbalanced=True)
    H = H + offset * torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    r = quiet(ncmse.measure_features, H, y, W, b, num_classes=C, lam=lam)
    ref = mp_decomposition(H.numpy(), y.numpy(), W.numpy(), b.numpy(), C, lam)
    for name in DECOMPOSITION:
        assert getattr(r, name) == pytest.approx(ref[name], rel=1e-8), name
    assert abs(r.loss - (r.loss_nc1 + r.loss_nc23 + r.loss_perp)) <= 1e-10 * r.loss


def test_ls_classifier_solves_the_augmented_system():
    """Schur-complement solution = dense solve of A W̃ᵀ = M̃ diag π (float64, moderate data)."""
    C, p = 4, 5
    H, y, *_ = clusters(3, C, p, imbalanced=True)
    for lam in (0.0, 1e-4, 0.3, 20.0):
        stats = ClassStats(C, p)
        stats.update(H + 3.0, y)
        n, mu, _, within = stats.centred()
        mom = lstsq.Moments(n / n.sum(), mu, within / n.sum(), int(n.sum()))
        W_ls, b_ls = lstsq.ls_classifier(mom, lam)
        A = mom.augmented_second_moment(lam)
        rhs = torch.cat([mu, torch.ones(C, 1, dtype=mu.dtype)], 1).T * mom.weights
        X = torch.linalg.solve(A, rhs).T
        torch.testing.assert_close(W_ls, X[:, :p], rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(b_ls, X[:, p], rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------------------------- scaling
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000), C=st.integers(2, 6), p=st.integers(1, 8), k=st.integers(-10, 10)
)
def test_scaling_by_powers_of_ten(seed, C, p, k):
    """Scaling the features by 10^k (|k| ≤ 10) changes no scale-free metric and raises nothing."""
    H, y, W, b = clusters(seed, C, p, imbalanced=True)
    s = 10.0**k
    base = quiet(ncmse.measure_features, H, y, W, b, num_classes=C)
    r = quiet(ncmse.measure_features, H * s, y, W / s, b, num_classes=C)
    assert r.flags == base.flags
    assert_close(r, base, SCALE_FREE, rel=1e-9, abs_=1e-13)
    np.testing.assert_allclose(np.asarray(r.snr), np.asarray(base.snr), rtol=1e-9)
    assert_close(r, base, ("loss", "loss_nc1", "loss_nc23", "loss_ls"), rel=1e-9)  # λ = 0, SPEC §4


# ------------------------------------------------------------------ rotation and permutation
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), C=st.integers(2, 6), p=st.integers(1, 8))
def test_rotation_and_class_permutation(seed, C, p):
    H, y, W, b = clusters(seed, C, p, imbalanced=True)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    perm = torch.randperm(C, generator=g)
    base = quiet(ncmse.measure_features, H, y, W, b, num_classes=C, lam=0.01)
    for kind, args in {
        "rotation": (H @ Q.T, y, W @ Q.T, b),
        "permutation": (H, torch.argsort(perm)[y], W[perm], b[perm]),
    }.items():
        r = quiet(ncmse.measure_features, *args, num_classes=C, lam=0.01)
        assert_close(r, base, SCALE_FREE + DECOMPOSITION, rel=1e-9, abs_=1e-12, what=kind)
        np.testing.assert_allclose(r.snr, base.snr, rtol=1e-9, err_msg=kind)


# ------------------------------------------------------------------------ float32 statistics
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), C=st.integers(2, 8), p=st.integers(1, 16))
def test_float32_statistics_agree_with_float64(seed, C, p):
    """A float32 statistics option gives nc1 within 1e-4 of float64 on well-conditioned data
    (issue 9 item 1: the tolerance follows the statistics' dtype)."""
    H, y, W, b = clusters(seed, C, p, imbalanced=True)
    r64 = quiet(ncmse.measure_features, H, y, W, b, num_classes=C)
    r32 = quiet(ncmse.measure_features, H, y, W, b, num_classes=C, dtype=torch.float32)
    assert r32.nc1 == pytest.approx(r64.nc1, rel=1e-4)
    assert r32.flags == r64.flags
    np.testing.assert_allclose(r32.snr, r64.snr, rtol=1e-3)
    assert r32.loss_ls == pytest.approx(r64.loss_ls, rel=1e-4)


def test_issue_example_float32():
    y = torch.arange(100) % 4
    g = torch.Generator().manual_seed(0)
    H = torch.randn(100, 8, dtype=torch.float64, generator=g)
    W = torch.randn(4, 8, dtype=torch.float64, generator=g)
    r64 = ncmse.measure_features(H, y, W, None, num_classes=4)
    r32 = ncmse.measure_features(H, y, W, None, num_classes=4, dtype=torch.float32)
    assert r32.nc1 == pytest.approx(r64.nc1, rel=1e-4)
    ref = geometry(H.numpy(), y.numpy(), W.numpy(), np.zeros(4), 4)
    assert r64.nc1 == pytest.approx(ref["nc1"], rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32])
def test_half_precision_statistics_are_rejected(dtype):
    H, y, W, b = clusters(0, 3, 4)
    with pytest.raises(InputError, match="dtype"):
        ncmse.measure_features(H, y, W, b, num_classes=3, dtype=dtype)
    with pytest.raises(InputError, match="dtype"):
        ncmse.measure_stream([(H, y)], W, b, num_classes=3, dtype=dtype)
    with pytest.raises(InputError, match="dtype"):
        ClassStats(3, 4, dtype=dtype)
    # half-precision *features* are fine: accumulated in float64
    r = ncmse.measure_features(H.half(), y, W, b, num_classes=3)
    exact = ncmse.measure_features(H.half().double(), y, W, b, num_classes=3)
    assert r.nc1 == pytest.approx(exact.nc1, rel=1e-12) and math.isfinite(r.nc1)


# ----------------------------------------------------------------------- order and sharding
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 70), shards=st.integers(1, 4))
def test_batch_order_and_sharding(seed, batch, shards):
    C, p = 4, 5
    H, y, W, b = clusters(seed, C, p, imbalanced=True)
    H = H + 50.0  # a common offset makes order-dependent rounding visible
    base = quiet(ncmse.measure_features, H, y, W, b, num_classes=C, lam=0.1)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    Hp, yp = H[perm], y[perm]
    batches = [(Hp[i : i + batch], yp[i : i + batch]) for i in range(0, len(y), batch)]
    r = quiet(ncmse.measure_stream, batches, W, b, num_classes=C, lam=0.1)
    assert_close(r, base, SCALE_FREE + DECOMPOSITION, rel=1e-10, abs_=1e-13, what="order")
    parts = []
    for k in range(shards):  # shards merged exactly (what all_reduce_ does across ranks)
        st_ = ClassStats(C, p)
        for hb, yb in batches[k::shards]:
            st_.update(hb, yb)
        parts.append(st_)
    merged = parts[0]
    for part in parts[1:]:
        merged = merge(merged, part)
    if not bool((merged.counts > 0).all()):
        return
    from ncmse.collapse.api import result_from_stats

    r2 = result_from_stats(merged, W, b, lam=0.1, warn=False)
    names = tuple(n for n in SCALE_FREE + DECOMPOSITION if n not in ("nc4", "accuracy"))
    assert_close(r2, base, names, rel=1e-10, abs_=1e-13, what="shards")


# ------------------------------------------------------------- single-use loaders and budgets
def _net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 4))


@pytest.mark.parametrize("budget", [0, 2_000, 10**9])
@pytest.mark.parametrize("kind", ["list", "generator", "callable", "dataloader"])
def test_single_use_loaders_at_every_budget(kind, budget):
    """Issue 9 item 2: a generator beyond the budget raises, never a silent accuracy 0."""
    net = _net()
    g = torch.Generator().manual_seed(2)
    X, Y = torch.randn(200, 5, generator=g), torch.arange(200) % 4
    L = [(X[i : i + 50], Y[i : i + 50]) for i in range(0, 200, 50)]
    with torch.no_grad():
        truth = float((net(X).argmax(1) == Y).double().mean())
        feats = net[:-1](X)
    sources = {
        "list": lambda: L,
        "generator": lambda: (b for b in L),
        "callable": lambda: lambda: iter(L),
        "dataloader": lambda: torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(X, Y), batch_size=50
        ),
    }
    fits = budget >= 200 * 6 * 4  # float32 features of the whole split
    feature_batches = [(feats[i : i + 50], Y[i : i + 50]) for i in range(0, 200, 50)]
    stream_sources = {
        "list": lambda: feature_batches,
        "generator": lambda: (b for b in feature_batches),
        "callable": lambda: lambda: iter(feature_batches),
        "dataloader": lambda: feature_batches,
    }
    W, b = net[-1].weight.detach(), net[-1].bias.detach()
    for run in (
        lambda: (
            ncmse.measure(net, sources[kind](), num_classes=4, memory_budget_bytes=budget)
            if kind != "callable"
            else None
        ),
        lambda: ncmse.measure_stream(
            stream_sources[kind](), W, b, num_classes=4, memory_budget_bytes=budget
        ),
    ):
        if kind == "generator" and not fits:
            with pytest.raises(InputError, match="single-use"):
                run()
            continue
        r = run()
        if r is None:
            continue
        assert r.accuracy == pytest.approx(truth, abs=1e-12)
        assert r.nc4_method == ("cache" if fits else "second_pass")


# -------------------------------------------------------------------------- degenerate inputs
def _degenerate(kind):
    C, p, n = 3, 5, 20
    y = torch.arange(C).repeat_interleave(n)
    g = torch.Generator().manual_seed(4)
    W = torch.randn(C, p, dtype=torch.float64, generator=g)
    mu = 2.0 * torch.randn(C, p, dtype=torch.float64, generator=g)
    noise = torch.randn(C * n, p, dtype=torch.float64, generator=g)
    if kind == "zero":
        H = torch.zeros(C * n, p, dtype=torch.float64)
    elif kind == "constant":
        H = torch.full((C * n, p), 3.7, dtype=torch.float64) + mu[0]
    elif kind == "collapsed":
        H = mu[y] + 1e3
    elif kind == "identical_means":
        H = mu[y] + noise
        H[n : 2 * n] = H[:n] + (mu[1] - mu[1])  # class 1 repeats class 0 exactly
    elif kind == "noise_only":  # within-class spread but every class the same distribution
        H = noise[:n].repeat(C, 1)
    return H, y, W


@pytest.mark.parametrize("kind", ["zero", "constant", "noise_only"])
@pytest.mark.parametrize("lam", [0.0, 1e-3])
def test_dead_features_are_flagged_not_collapse(kind, lam):
    H, y, W = _degenerate(kind)
    with pytest.warns(ncmse.NCMSEWarning, match="no_between_class_spread"):
        r = ncmse.measure_features(H, y, W, None, num_classes=3, lam=lam)
    assert r.flags[0] == "no_between_class_spread"
    for name in ("nc1", "nc1_unnormalized", "nc3", "cdnv", "equinorm_means",
                 "equiangular_means", "maxangle_means", "nc4"):  # fmt: skip
        assert math.isnan(getattr(r, name)), name
    assert all(math.isnan(w) for w in r.snr)
    # the decomposition is still exact: the LS classifier predicts the class priors
    if lam == 0:  # the LS classifier predicts the class priors
        assert r.loss_ls == pytest.approx(0.5 * (1 - 1 / 3), rel=1e-9)
    assert abs(r.loss - (r.loss_nc1 + r.loss_nc23 + r.loss_perp)) <= 1e-10 * r.loss
    row = r.to_dict()
    assert row["flags"].startswith("no_between_class_spread")


def test_exact_collapse_is_zero_with_infinite_snr():
    H, y, W = _degenerate("collapsed")
    with pytest.warns(ncmse.NCMSEWarning, match="within_class_singular"):
        r = ncmse.measure_features(H, y, W, None, num_classes=3, lam=1e-3)
    assert r.flags == ("within_class_singular",)
    assert r.nc1 == 0.0 and r.cdnv == 0.0
    assert r.snr == (math.inf, math.inf)


def test_identical_class_means_are_flagged():
    H, y, W = _degenerate("identical_means")
    with pytest.warns(ncmse.NCMSEWarning, match="between_class_rank_deficient"):
        r = ncmse.measure_features(H, y, W, None, num_classes=3, lam=1e-3)
    assert r.flags == ("between_class_rank_deficient",)
    assert r.cdnv == math.inf  # one pair with no separation at all
    assert math.isfinite(r.nc1) and r.nc1 > 0
    assert r.snr[1] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("C,p", [(4, 4), (12, 5)])  # C > p: more classes than directions
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_singular_within_class_covariance_gives_generalised_singular_values(offset, C, p):
    """ω of a singular Σ_W: +inf along means outside range(Σ_W), the ε → 0 limit of
    svd((Σ_W + εI)^{-1/2} M̄) otherwise, the same for every tolerance."""
    n = 30
    g = torch.Generator().manual_seed(5)
    y = torch.arange(C).repeat_interleave(n)
    mu = torch.randn(C, p, dtype=torch.float64, generator=g)
    noise = torch.randn(C * n, p, dtype=torch.float64, generator=g)
    noise[:, p - 1] = 0.0  # no within-class spread along e_{p-1}; the means do vary along it
    H = mu[y] + noise + offset
    W = torch.randn(C, p, dtype=torch.float64, generator=g)
    omegas = []
    for rtol in (None, 1e-6, 1e-10, 1e-13):
        r = quiet(ncmse.measure_features, H, y, W, None, num_classes=C, rtol=rtol)
        assert r.flags == ("within_class_singular",)
        omegas.append(r.snr)
    for om in omegas[1:]:
        np.testing.assert_allclose(om, omegas[0], rtol=1e-9)
    om = omegas[0]
    assert om[0] == math.inf and all(math.isfinite(w) for w in om[1:])
    # reference: singular values of (Σ_W + εI)^{-1/2} M̄ for small ε (one grows like ε^{-1/2})
    mu_hat = torch.stack([H[y == c].mean(0) for c in range(C)])
    Z = H - mu_hat[y]
    Sw = (Z.T @ Z / len(y)).numpy()
    Mbar = (mu_hat - mu_hat.mean(0)).T.numpy()
    ev, Q = np.linalg.eigh(Sw + 1e-12 * np.eye(p))
    ref = np.linalg.svd(Q @ np.diag(ev**-0.5) @ Q.T @ Mbar, compute_uv=False)[: min(p, C - 1)]
    assert ref[0] > 1e5
    np.testing.assert_allclose(om[1:], ref[1:], rtol=1e-6)


def test_flags_are_one_csv_column():
    assert "flags" in METRIC_NAMES
    H, y, W = _degenerate("collapsed")
    row = quiet(ncmse.measure_features, H, y, W, None, num_classes=3).to_dict()
    flat = flatten_row(row)
    assert flat["flags"] == "within_class_singular;total_covariance_singular"  # λ = 0: Σ_T rank 2
    assert not any(k.startswith("flags_") for k in flat)
    clean = ncmse.measure_features(*clusters(0, 3, 4)[:3], None, num_classes=3)
    assert clean.flags == () and clean.to_dict()["flags"] == ""


def test_no_warning_on_regular_data():
    H, y, W, b = clusters(1, 4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ncmse.NCMSEWarning)
        ncmse.measure_features(H, y, W, b, num_classes=4)


def test_nc1_keeps_at_most_c_minus_one_directions():
    """Issue 9 item 3: the C-th singular value of M̄ (rounding of μ_G) is never inverted."""
    H, y, W, b = clusters(2, 2, 4, n=50, spread=1.0, sep=1.0)
    base = ncmse.measure_features(H, y, W, b, num_classes=2, lam=1e-3)
    for off in (1e3, 1e4, 1e5):
        r = ncmse.measure_features(H + off, y, W, b, num_classes=2, lam=1e-3)
        assert r.nc1 == pytest.approx(base.nc1, rel=1e-8)
    s, _ = ncmse_geometry.singular_values(torch.randn(6, 3, dtype=torch.float64), 1e-12)
    assert len(s) == 2


# ------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("rtol", [0, 0.0, 1.0, 2.0, -1e-3, float("nan"), float("inf"), "x", True])
def test_rtol_is_validated(rtol):
    H, y, W, b = clusters(0, 3, 4)
    with pytest.raises(InputError, match="rtol"):
        ncmse.measure_features(H, y, W, b, num_classes=3, rtol=rtol)
    with pytest.raises(InputError, match="rtol"):
        ncmse.measure_stream(iter([(H, y)]), W, b, num_classes=3, rtol=rtol)


def test_numeric_arguments_are_validated():
    H, y, W, b = clusters(0, 3, 4)
    with pytest.raises(InputError, match="lam"):
        ncmse.measure_features(H, y, W, b, num_classes=3, lam="abc")
    with pytest.raises(InputError, match="lam"):
        ncmse.measure_features(H, y, W, b, num_classes=3, lam=float("nan"))
    with pytest.raises(InputError, match="weight_decay"):
        ncmse.lambda_for(weight_decay="abc", num_classes=4)
    with pytest.raises(InputError, match="weight_decay"):
        ncmse.lambda_for(weight_decay=float("inf"), num_classes=4)
    assert ncmse.lambda_for(weight_decay=np.float32(1e-3), num_classes=4) == pytest.approx(2e-3)
    with pytest.raises(InputError, match="meta"):
        ncmse.measure_features(H.to("meta"), y.to("meta"), W, b, num_classes=3)
    with pytest.raises(InputError, match="meta"):
        ncmse.measure_stream([(H.to("meta"), y)], W, b, num_classes=3)


# ------------------------------------------------------------------------ ClassStats / metric
def test_class_stats_state_round_trip_equality_and_repr():
    H, y, *_ = clusters(0, 3, 4)
    a = ClassStats(3, 4)
    a.update(H, y)
    b = ClassStats.from_state(3, 4, {k: v.clone() for k, v in a.state_tensors().items()})
    for x, z in zip(a.centred(), b.centred()):
        torch.testing.assert_close(x, z, rtol=0, atol=0)
    assert a == a and a != b and a != ClassStats(3, 4)  # identity, not (C, p, device, dtype)
    text = repr(a)
    assert "N=75" in text and "counts=[25, 25, 25]" in text
    assert not hasattr(a, "has_shift")


def test_metric_pickles_and_matches_the_stream():
    pytest.importorskip("torchmetrics")
    from ncmse.metric import NeuralCollapseMetric

    H, y, W, b = clusters(3, 4, 6)
    layer = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(b)
    metric = NeuralCollapseMetric(layer, lam=0.01, keep_features=True)
    metric = pickle.loads(pickle.dumps(metric))
    for i in range(0, len(y), 16):
        metric.update(H[i : i + 16], y[i : i + 16])
    out = metric.compute()
    ref = ncmse.measure_features(H, y, W, b, num_classes=4, lam=0.01)
    assert_close(out, ref, SCALE_FREE + DECOMPOSITION, rel=1e-10, abs_=1e-13)
    kept = metric.features[0] if isinstance(metric.features, list) else metric.features
    assert kept.shape[1] == 6


def test_training_records_first_epoch_of_each_flag():
    from ncmse.train.summary import first_flag_epochs

    rows = [
        {"epoch": 1, "flags": "", "test_flags": ""},
        {"epoch": 2, "flags": "within_class_singular", "test_flags": ""},
        {"epoch": 5, "flags": "no_between_class_spread;within_class_singular", "test_flags": "x"},
    ]
    assert first_flag_epochs(rows) == {
        "within_class_singular": 2,
        "no_between_class_spread": 5,
        "test_x": 5,
    }


# ------------------------------------------------- the LS solve: never a silent truncation
def test_ridge_solve_is_never_truncated_float32_statistics():
    """Σ_T + λI (λ > 0) has no null space: however ill-conditioned, it is solved exactly, also
    from float32 statistics whose rank tolerance (max(p, C)·eps32·100) exceeds its conditioning.
    (Before: a truncated pseudo-inverse, loss_ls 10–100× off with no flag.)"""
    C, p = 4, 6
    H, y, W, b = clusters(11, C, p, n=30, spread=0.004, sep=2.0)
    ref = mp_decomposition(H.numpy(), y.numpy(), W.numpy(), b.numpy(), C, 1e-5)
    r = quiet(ncmse.measure_features, H, y, W, b, num_classes=C, lam=1e-5, dtype=torch.float32)
    assert "total_covariance_singular" not in r.flags
    for name in DECOMPOSITION:
        assert getattr(r, name) == pytest.approx(ref[name], rel=1e-3), name


def test_ridge_solve_with_a_constant_feature_at_scale():
    """λ > 0, one constant feature, features ×1e6: Σ_T + λI is positive definite; §3 matches a
    60-digit evaluation to 1e-8."""
    C, p = 3, 4
    H, y, W, b = clusters(12, C, p, n=15, spread=1.0, sep=2.0)
    H[:, 2] = 0.7
    H = H * 1e6
    r = quiet(ncmse.measure_features, H, y, W, b, num_classes=C, lam=1e-3)
    ref = mp_decomposition(H.numpy(), y.numpy(), W.numpy(), b.numpy(), C, 1e-3)
    assert "total_covariance_singular" not in r.flags
    for name in DECOMPOSITION:
        assert getattr(r, name) == pytest.approx(ref[name], rel=1e-8), name


def test_minimum_norm_ls_is_flagged():
    """λ = 0 and Σ_T below the rank tolerance (a discriminative direction of tiny variance): the
    minimum-norm LS classifier is an approximation there, and the result says so."""
    C, p = 3, 4
    H, y, W, b = clusters(13, C, p, n=20, spread=1.0, sep=2.0)
    H[:, 3] = 1e-9 * y.double() + 1e-11 * torch.randn(len(y), dtype=torch.float64)
    with pytest.warns(ncmse.NCMSEWarning, match="total_covariance_singular"):
        r = ncmse.measure_features(H, y, W, b, num_classes=C, lam=0.0)
    assert "total_covariance_singular" in r.flags
    assert "total_covariance_singular" in r.to_dict()["flags"].split(";")
    regular = quiet(ncmse.measure_features, *clusters(13, C, p, n=20)[:3], b, num_classes=C)
    assert "total_covariance_singular" not in regular.flags


@pytest.mark.parametrize("per_class", [2, 3, 4])
def test_fewer_samples_than_dimensions_gives_nan_omega_not_inf(per_class):
    """N − C < p (a small split, a wide layer): Σ_W is singular whatever the features, so an ω
    of +inf would read as exact collapse. It is NaN with the flag; nc1 keeps its value."""
    C, p = 3, 10
    g = torch.Generator().manual_seed(per_class)
    y = torch.arange(C).repeat_interleave(per_class)
    H = 3.0 * torch.randn(C, p, dtype=torch.float64, generator=g)[y]
    H = H + torch.randn(len(y), p, dtype=torch.float64, generator=g)
    W = torch.randn(C, p, dtype=torch.float64, generator=g)
    assert len(y) - C < p
    with pytest.warns(ncmse.NCMSEWarning, match="fewer_samples_than_dimensions"):
        r = ncmse.measure_features(H, y, W, None, num_classes=C)
    assert "fewer_samples_than_dimensions" in r.flags and "within_class_singular" in r.flags
    assert not any(w == math.inf for w in r.snr)
    assert math.isnan(r.snr[0])  # a mean direction outside range(Σ_W): undefined, not +inf
    mu = torch.stack([H[y == c].mean(0) for c in range(C)]).numpy()
    Z = H.numpy() - mu[y.numpy()]
    Mbar = (mu - mu.mean(0)).T
    ref_nc1 = np.trace(Z.T @ Z / len(y) @ np.linalg.pinv(Mbar @ Mbar.T / C, rcond=1e-10)) / C
    assert r.nc1 == pytest.approx(ref_nc1, rel=1e-9)
    assert math.isfinite(r.cdnv) and math.isfinite(r.nc3)


def test_enough_samples_keep_infinite_omega_without_the_flag():
    """Negative control at the boundary N − C = p: exact collapse along one direction is +inf."""
    C, p, n = 3, 4, 3  # N − C = 6 ≥ p
    g = torch.Generator().manual_seed(0)
    y = torch.arange(C).repeat_interleave(n)
    H = torch.randn(C, p, dtype=torch.float64, generator=g)[y]
    H[:, :3] += torch.randn(len(y), 3, dtype=torch.float64, generator=g)  # none along e_3
    r = quiet(ncmse.measure_features, H, y, torch.eye(C, p, dtype=torch.float64), None,
              num_classes=C)  # fmt: skip
    assert "fewer_samples_than_dimensions" not in r.flags
    assert r.snr[0] == math.inf
    C, p = 3, 6  # N − C = 6 = p: still not fewer
    y = torch.arange(C).repeat_interleave(n)
    H = torch.randn(len(y), p, dtype=torch.float64, generator=g) + 2 * torch.eye(C, p)[y]
    r = quiet(ncmse.measure_features, H, y, torch.eye(C, p, dtype=torch.float64), None,
              num_classes=C)  # fmt: skip
    assert "fewer_samples_than_dimensions" not in r.flags


@pytest.mark.parametrize("zero_rows", [[0, 1, 2, 3], [2]])
def test_zero_classifier_rows_give_nan_angles_with_a_flag(zero_rows):
    """cos of a zero row is undefined: W = 0 gave equiangular_classifier 0 and maxangle 1/3 (a
    perfect simplex) with no flag. NaN with zero_classifier_rows; defined metrics keep values."""
    g = torch.Generator().manual_seed(1)
    H = torch.randn(200, 6, dtype=torch.float64, generator=g)
    y = torch.arange(200) % 4
    W = torch.randn(4, 6, dtype=torch.float64, generator=g)
    W[zero_rows] = 0.0
    with pytest.warns(ncmse.NCMSEWarning, match="zero_classifier_rows"):
        r = ncmse.measure_features(H, y, W, torch.zeros(4, dtype=torch.float64), num_classes=4)
    assert r.flags == ("zero_classifier_rows",)
    assert math.isnan(r.equiangular_classifier) and math.isnan(r.maxangle_classifier)
    if len(zero_rows) == 4:
        assert math.isnan(r.equinorm_classifier) and math.isnan(r.nc3)
        assert math.isnan(r.etf_error_wm)
        assert r.accuracy == pytest.approx(0.25, rel=1e-15)  # every class a maximiser: 1/C
    else:  # norms, nc3 and W M̄ are defined with one zero row: their values stay
        ref = geometry(H.numpy(), y.numpy(), W.numpy(), np.zeros(4), 4)
        for name in ("equinorm_classifier", "nc3", "etf_error_wm", "nc1"):
            assert getattr(r, name) == pytest.approx(ref[name], rel=1e-9), name
    # negative control: a tiny but non-zero row has well-defined angles, no flag
    W[zero_rows] = 1e-30 * torch.randn(len(zero_rows), 6, dtype=torch.float64, generator=g)
    r = ncmse.measure_features(H, y, W, torch.zeros(4, dtype=torch.float64), num_classes=4)
    assert r.flags == () and math.isfinite(r.maxangle_classifier)


# ------------------------------------------------------- precision of the features as given
def _layer_normed(C=100, p=32, N=6000, seed=0):
    """Features after a final LayerNorm (every h in the hyperplane 1ᵀh = 0), in float64."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % C
    mu = torch.randn(C, p, dtype=torch.float64, generator=g)
    H = mu[y] + 0.3 * torch.randn(N, p, dtype=torch.float64, generator=g)
    H = torch.nn.functional.layer_norm(H, (p,))
    return H, y, torch.randn(C, p, dtype=torch.float64, generator=g)


def test_float32_layer_normed_features_equal_their_float64_measurement():
    """SPEC §2 reference case: float32 rounding adds a ~1e-8 singular value to M̄ along the
    direction LayerNorm removed; a float64 tolerance kept it (nc1 ×30, ω_1 = +inf)."""
    H, y, W = _layer_normed()
    want = quiet(ncmse.measure_features, H, y, W, None, num_classes=100)
    H32 = H.float()
    got = quiet(ncmse.measure_features, H32, y, W, None, num_classes=100)
    assert got.nc1 == pytest.approx(want.nc1, rel=1e-6)
    np.testing.assert_allclose(got.snr, want.snr, rtol=1e-6, atol=1e-12)
    assert got.flags == want.flags
    batches = [(H32[i : i + 700], y[i : i + 700]) for i in range(0, len(y), 700)]
    stream = quiet(ncmse.measure_stream, batches, W, None, num_classes=100)
    for name in ("nc1", "nc1_trace_ratio", "loss_nc1", "loss_perp", "nc3", "cdnv"):
        assert getattr(stream, name) == pytest.approx(getattr(got, name), rel=1e-10), name
    np.testing.assert_allclose(stream.snr, got.snr, rtol=1e-10)
    # negative control: the same float32-rounded values given as float64 are exact data, whose
    # off-hyperplane direction (tiny, but real at float64 precision) is kept
    exact = quiet(ncmse.measure_features, H32.double(), y, W, None, num_classes=100)
    assert exact.nc1 > 10 * want.nc1


def test_a_weak_but_real_class_direction_of_float32_features_is_kept():
    """Positive control: a class-mean direction 1e-4 of the others (1000× the float32
    rounding) counts in nc1, as for the same values given in float64."""
    g = torch.Generator().manual_seed(4)
    C, p, n = 6, 8, 400
    y = torch.arange(C).repeat_interleave(n)
    mu = torch.randn(C, p, dtype=torch.float64, generator=g)
    mu[:, -1] = 1e-4 * torch.randn(C, dtype=torch.float64, generator=g)
    H = (mu[y] + 0.05 * torch.randn(len(y), p, dtype=torch.float64, generator=g)).float()
    W = torch.randn(C, p, dtype=torch.float64, generator=g)
    got = quiet(ncmse.measure_features, H, y, W, None, num_classes=C)
    ref = quiet(ncmse.measure_features, H.double(), y, W, None, num_classes=C)
    assert got.flags == ref.flags == ()
    assert got.nc1 == pytest.approx(ref.nc1, rel=1e-9)
    np.testing.assert_allclose(got.snr, ref.snr, rtol=1e-9)


# ------------------------------------------------------------------------ huge features
def _three_clusters(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(300) % 3
    H = torch.randn(3, 5, dtype=torch.float64, generator=g)[y]
    H = H + 0.5 * torch.randn(300, 5, dtype=torch.float64, generator=g)
    return H, y, torch.randn(3, 5, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("scale", [1e150, 1e-150])
def test_huge_and_tiny_finite_features_are_measured_exactly(scale):
    """Far outside SPEC's 10^±10 but within float64's second moments: every scale-free metric,
    the decisions and (with W/s) the loss are those of the unscaled features."""
    H, y, W = _three_clusters()
    ref = ncmse.measure_features(H, y, W, None, num_classes=3)
    got = ncmse.measure_features(H * scale, y, W / scale, None, num_classes=3)
    for name in ("nc1", "cdnv", "nc3", "equiangular_means", "loss", "loss_nc1", "loss_perp"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-12), name
    assert (got.nc4, got.accuracy, got.flags) == (ref.nc4, ref.accuracy, ref.flags)


def test_overflowing_second_moments_say_overflow_not_nan():
    """Finite features of ~1e200: their squares overflow float64. The error says so and how to
    fix it; features with a real NaN still say NaN."""
    H, y, W = _three_clusters()
    for call in (
        lambda X: ncmse.measure_features(X, y, W, None, num_classes=3),
        lambda X: ncmse.measure_stream([(X[:150], y[:150]), (X[150:], y[150:])], W, None,
                                       num_classes=3),
    ):  # fmt: skip
        with pytest.raises(ncmse.errors.NonFiniteError, match="too large.*overflow.*rescale"):
            call(H * 1e200)
        bad = H.clone()
        bad[7, 2] = math.nan
        with pytest.raises(ncmse.errors.NonFiniteError, match="NaN or Inf"):
            call(bad)
