"""Many classes: tiled pairwise metrics, tiled float32/float64 decisions, the measured class subset.

Every tiled kernel is run with tiny tiles (many tiles, partial edge tiles, 1×1 diagonal tiles) and
compared with an independent dense float64 computation straight from SPEC §2–§3.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ncmse.collapse import pairwise
from ncmse.collapse.decisions import TiledDecisions, float32_unit_roundoff
from ncmse.collapse.min_samples import DeferredRows, check_min_samples
from reference_impl import decision_outcomes

F64 = torch.float64


def _rand(shape, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=F64) + shift


# ----------------------------------------------------------------------- dense references
def _cos_pairs(V):
    V = V.numpy()
    n = np.linalg.norm(V, axis=1)
    C = len(V)
    return np.array([V[a] @ V[c] / (n[a] * n[c]) for a, c in itertools.combinations(range(C), 2)])


def _angles_ref(V):
    cs = _cos_pairs(V)
    C = V.shape[0]
    std = np.std(cs, ddof=1) if len(cs) > 1 else 0.0
    return std, np.mean(np.abs(cs + 1.0 / (C - 1)))


def _cdnv_ref(means, var):
    M, v = means.numpy(), var.numpy()
    C = len(M)
    vals = [
        (v[a] + v[c]) / (2 * np.sum((M[a] - M[c]) ** 2))
        for a, c in itertools.combinations(range(C), 2)
    ]
    return float(np.mean(vals))


def _etf_ref(G):
    G = G.numpy()
    C = G.shape[0]
    etf = (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)
    return float(np.linalg.norm(G / np.linalg.norm(G) - etf))


# ----------------------------------------------------------------------------- pairwise
@pytest.mark.parametrize("C,p", [(2, 3), (3, 5), (17, 4), (40, 9)])
@pytest.mark.parametrize("tile", [1, 2, 3, 7, None])
def test_pairwise_tiles_match_dense_reference(C, p, tile):
    means = _rand((C, p), C + p, shift=50.0)  # an offset: everything is centred first
    mbar = means - means.mean(dim=0)
    var = _rand((C,), 1).abs()
    W = _rand((C, p), 2)
    b = _rand((C,), 3)
    pi = torch.rand(C, generator=torch.Generator().manual_seed(4), dtype=F64)
    pi /= pi.sum()

    stats = pairwise.means_pair_stats(mbar, var, tile=tile)
    eq, mx = _angles_ref(mbar)
    assert stats.equiangular == pytest.approx(eq, rel=1e-12, abs=1e-15)
    assert stats.maxangle == pytest.approx(mx, rel=1e-12)
    assert stats.cdnv == pytest.approx(_cdnv_ref(means, var), rel=1e-12)
    assert stats.etf_error == pytest.approx(_etf_ref(mbar @ mbar.T), rel=1e-12)

    w_stats = pairwise.angle_stats(W, tile=tile)
    eq, mx = _angles_ref(W)
    assert w_stats.equiangular == pytest.approx(eq, rel=1e-12, abs=1e-15)
    assert w_stats.maxangle == pytest.approx(mx, rel=1e-12)

    # residual Σ_c π_c ‖W μ_c + b − e_c‖² through centred means and the offset W μ_G + b
    mu_g = means.mean(dim=0)
    resid, etf = pairwise.cross_pass(W, mbar, W @ mu_g + b, pi, etf=True, tile=tile)
    R = (means @ W.T + b - torch.eye(C, dtype=F64)).numpy()
    ref = float(np.sum(pi.numpy() * np.sum(R**2, axis=1)))
    assert resid == pytest.approx(ref, rel=1e-12)
    assert etf == pytest.approx(_etf_ref(W @ mbar.T), rel=1e-12)


@pytest.mark.slow
def test_pairwise_tiled_equals_untiled_to_1e12_on_larger_problem():
    C, p = 230, 17
    means = _rand((C, p), 7)
    mbar = means - means.mean(dim=0)
    var = _rand((C,), 8).abs() + 0.1
    W = _rand((C, p), 9)
    one = pairwise.means_pair_stats(mbar, var, tile=C)
    for tile in (1, 13, 64):
        many = pairwise.means_pair_stats(mbar, var, tile=tile)
        for name in ("equiangular", "maxangle", "cdnv", "etf_error"):
            assert getattr(many, name) == pytest.approx(getattr(one, name), rel=1e-12), name
        a1, a2 = pairwise.angle_stats(W, tile=C), pairwise.angle_stats(W, tile=tile)
        assert a2.equiangular == pytest.approx(a1.equiangular, rel=1e-12)
        assert a2.maxangle == pytest.approx(a1.maxangle, rel=1e-12)


def test_cdnv_close_pairs_are_recomputed_from_differences():
    C, p = 12, 6
    means = _rand((C, p), 11, shift=1e3)
    means[7] = means[2] + 1e-9 * _rand((p,), 12)  # a pair 1e-9 apart, 1e3 from the origin
    mbar = means - means.mean(dim=0)
    var = _rand((C,), 13).abs()
    for tile in (1, 5, C):
        stats = pairwise.means_pair_stats(mbar, var, tile=tile)
        assert stats.refined_pairs >= 1
        # reference: the centred means' own differences (what the library computes from)
        assert stats.cdnv == pytest.approx(_cdnv_ref(mbar, var), rel=1e-9)


def test_near_etf_errors_keep_their_digits():
    """Near the simplex ETF, 2 − 2⟨·,·⟩ would cancel; the direct squared sums do not."""
    C = 24
    E = torch.eye(C, dtype=F64) - 1.0 / C
    Q, _ = torch.linalg.qr(_rand((C + 3, C), 14))
    means = 3.0 * E @ Q.T + 1e-8 * _rand((C, C + 3), 15)
    mbar = means - means.mean(dim=0)
    ref = _etf_ref(mbar @ mbar.T)
    assert 1e-9 < ref < 1e-7
    for tile in (1, 5, C):
        stats = pairwise.means_pair_stats(mbar, torch.ones(C, dtype=F64), tile=tile)
        assert stats.etf_error == pytest.approx(ref, rel=1e-6)
        eq, _ = _angles_ref(mbar)
        assert stats.equiangular == pytest.approx(eq, rel=1e-6)


def test_etf_error_survives_a_bad_norm_estimate(monkeypatch):
    C, p = 30, 5
    W, M = _rand((C, p), 16), _rand((C, p), 17)
    ref = _etf_ref(W @ M.T)
    monkeypatch.setattr(pairwise, "_gram_norm_estimate", lambda a, b: 1e-3)  # way off: 2nd pass
    _, etf = pairwise.cross_pass(W, M, etf=True, tile=7)
    assert etf == pytest.approx(ref, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    seed=st.integers(0, 1000),
    offset=st.sampled_from([0.0, 1.0, 1e6]),
)
def test_running_moments_equal_two_pass_std(sizes, seed, offset):
    rng = np.random.default_rng(seed)
    blocks = [offset + rng.normal(size=n) for n in sizes]
    acc = pairwise.RunningMoments()
    for block in blocks:
        acc.add(torch.as_tensor(block))
    allv = np.concatenate(blocks)
    expected = np.std(allv, ddof=1) if len(allv) > 1 else 0.0
    assert acc.std() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert acc.count == len(allv)


def test_tile_size_respects_the_budget():
    assert pairwise.tile_size(10) == 10
    t = pairwise.tile_size(50_257, 64 * 1024**2)
    assert 3 * 8 * t * t <= 64 * 1024**2 < 3 * 8 * (t + 1) ** 2
    assert pairwise.tile_size(50_257, 0) == 1


# ---------------------------------------------------------------------------- decisions
def _reference(H, y, W, b, means):
    """(credit, mismatch) of the independent per-sample reference (tests/reference_impl.py)."""
    credit, mismatch = decision_outcomes(H.numpy(), y.numpy(), W.numpy(), b.numpy(), means.numpy())
    return torch.from_numpy(credit), torch.from_numpy(mismatch)


def _clear_of_the_tolerance(H, W, b, means, band=4.0):
    """True when no score lies within a factor ``band`` of the tie tolerance from its best (the
    definition then leaves no room for rounding to decide)."""
    mu_g = means.mean(dim=0)
    x, mbar = H - mu_g, means - mu_g
    k = 4.0 * (W.shape[1] + 6) * 2.0**-53
    r = mbar.norm(dim=1).max()
    tau_a = k * (W.norm(dim=1).max() * H.norm(dim=1) + b.abs().max())
    tau_b = k * (x.norm(dim=1) + r) * (r + mu_g.norm())
    for scores, tau in ((H @ W.T + b, tau_a), (x @ mbar.T - 0.5 * (mbar * mbar).sum(1), tau_b)):
        gap = scores.amax(dim=1, keepdim=True) - scores
        rel = gap / tau.unsqueeze(1)
        if bool(((rel > 1 / band) & (rel < band)).any()):
            return False
    return True


def _near_tie_problem(C=60, p=12, N=600, offset=1e4, seed=0, nudge=1e-7):
    """Near ties (a relative gap ``nudge``, below float32 resolution) and exact ties of both
    decisions: bisector samples, a duplicated classifier row, two coinciding class means."""
    g = torch.Generator().manual_seed(seed)
    means = offset + torch.randn(C, p, generator=g, dtype=F64)
    means[3] = means[2]  # nearest-mean ties for every sample near them
    W = torch.randn(C, p, generator=g, dtype=F64)
    b = torch.randn(C, generator=g, dtype=F64)
    # bit-equal classifier scores of two classes, one of them the usual winner
    top = int((W @ means.mean(dim=0) + b).argmax())
    twin = (top + 1) % C
    W[twin], b[twin] = W[top], b[top]
    y = torch.randint(0, C, (N,), generator=g)
    H = means[y] + 0.3 * torch.randn(N, p, generator=g, dtype=F64)
    k = N // 3
    i = torch.randint(0, C, (k,), generator=g)
    j = (i + 1 + torch.randint(0, C - 1, (k,), generator=g)) % C
    # NCC near-ties: on the bisector of two means, nudged by `nudge` of their distance (a tenth
    # of them exactly on it)
    eps = nudge * torch.randn(k, 1, generator=g, dtype=F64)
    eps[: k // 10] = 0.0
    H[:k] = 0.5 * (means[i] + means[j]) + eps * (means[j] - means[i])
    # classifier near-ties: move samples onto (w_i − w_j)·h + b_i − b_j ≈ 0
    d = W[i] - W[j]
    s = (H[k : 2 * k] * d).sum(1) + b[i] - b[j]
    H[k : 2 * k] -= ((s - nudge * eps.squeeze(1)) / (d * d).sum(1)).unsqueeze(1) * d
    y[:k] = i
    cls = (H @ W.T + b).argmax(dim=1)
    y[(cls == top) | (cls == twin)] = top  # labels on the tied classifier rows
    return H, y, W, b, means


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("tile", [1, 7, 60])
def test_tiled_decisions_equal_the_reference_with_exact_and_near_ties(precision, tile):
    H, y, W, b, means = _near_tie_problem()
    assert _clear_of_the_tolerance(H, W, b, means)
    ref_credit, ref_mismatch = _reference(H, y, W, b, means)
    rule = TiledDecisions(W, b, means, means.mean(dim=0), precision=precision, tile=tile)
    got = rule(H, y)
    redecided = rule.redecided
    assert torch.equal(got.mismatch, ref_mismatch)
    assert torch.equal(got.credit, ref_credit)
    unlabelled = rule(H)
    assert unlabelled.credit is None and torch.equal(unlabelled.mismatch, ref_mismatch)
    # the problem really has ties of each kind, and fractional credits
    assert rule.tied > 0 and bool(((ref_credit > 0) & (ref_credit < 1)).any())
    if precision == "float32":
        # every genuine near-tie (top-2 gap below float32 resolution) was re-decided in float64
        mu_g = means.mean(dim=0)
        x, mbar = H - mu_g, means - mu_g
        near = torch.zeros(len(H), dtype=torch.bool)
        for V, beta in ((W, W @ mu_g + b), (mbar, -0.5 * (mbar * mbar).sum(dim=1))):
            top = (x @ V.T + beta).topk(2, dim=1).values
            scale = x.norm(dim=1) * V.norm(dim=1).max() + beta.abs().max()
            near |= (top[:, 0] - top[:, 1]) < 1e-7 * scale
        assert int(near.sum()) >= 50
        assert redecided >= int(near.sum())
        assert redecided < len(H)


def test_exact_ties_are_sets_in_both_precisions():
    C, p = 5, 3
    means = torch.zeros(C, p, dtype=F64)
    means[:, 0] = torch.tensor([1.0, 1.0, -1.0, 2.0, 2.0])  # 0 = 1 and 3 = 4 coincide
    W = means.clone()
    H = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    y = torch.tensor([4, 2, 0])
    for precision in ("float32", "float64"):
        rule = TiledDecisions(W, torch.zeros(C, dtype=F64), means, means.mean(0),
                              precision=precision, tile=2)  # fmt: skip
        got = rule(H, y)
        # h = 2: classifier {3, 4}, nearest {3, 4}; h = 1: classifier {3, 4}, nearest {0, 1};
        # h = 0: every score 0 (a tie of all five), nearest mean: {0, 1} at distance 1
        assert got.mismatch.tolist() == [False, True, False]
        assert got.credit.tolist() == [0.5, 0.0, 0.2]


def test_a_constant_classifier_gets_chance_accuracy_and_no_mismatch():
    """W = 0, b = 0: every class is a maximiser — accuracy 1/C (a random tie-break's
    expectation, never 1 or 'class 0 wins'), and no sample is an NC4 mismatch."""
    g = torch.Generator().manual_seed(0)
    C, p = 7, 4
    means = torch.randn(C, p, generator=g, dtype=F64)
    H = torch.randn(300, p, generator=g, dtype=F64)
    y = torch.randint(0, C, (300,), generator=g)
    for precision in ("float32", "float64"):
        got = TiledDecisions(torch.zeros(C, p, dtype=F64), torch.zeros(C, dtype=F64), means,
                             means.mean(0), precision=precision, tile=3)(H, y)  # fmt: skip
        assert torch.allclose(got.credit, torch.full((300,), 1 / C, dtype=F64), rtol=0, atol=0)
        assert not bool(got.mismatch.any())


def test_unit_roundoff_follows_reduced_precision_matmul_settings():
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert float32_unit_roundoff() == 2.0**-24
        torch.set_float32_matmul_precision("high")
        assert float32_unit_roundoff() == 2.0**-11
        torch.set_float32_matmul_precision("medium")
        assert float32_unit_roundoff() == 2.0**-8
    finally:
        torch.set_float32_matmul_precision(old)


def test_decisions_scale_invariant_over_twenty_decades():
    """Exact and near ties under scalings by 1e±10: the same credits and mismatches as the
    unscaled reference (bit-equal tied scores are sets, whatever order the kernel sums in)."""
    H, y, W, b, means = _near_tie_problem(C=20, N=200, offset=0.0, seed=3, nudge=1e-9)
    assert _clear_of_the_tolerance(H, W, b, means)
    ref_credit, ref_mismatch = _reference(H, y, W, b, means)
    for k in (-10, 0, 10):
        s = 10.0**k
        for precision in ("float32", "float64"):
            rule = TiledDecisions(W, b * s, means * s, means.mean(0) * s, precision=precision,
                                  tile=6)  # fmt: skip
            got = rule(H * s, y)
            assert torch.equal(got.mismatch, ref_mismatch)
            assert torch.equal(got.credit, ref_credit)


# ------------------------------------------------------------------------------ subset
def test_check_min_samples():
    assert check_min_samples(None) is None and check_min_samples(3) == 3
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(ValueError, match="min_samples"):
            check_min_samples(bad)


@pytest.mark.parametrize("m", [2, 3, 5])
def test_deferred_rows_hold_exactly_the_first_m_minus_1_rows(m):
    g = torch.Generator().manual_seed(m)
    C, N = 9, 200
    counts = torch.tensor([0, 1, 2, 3, 4, 5, 40, 60, 85])
    y = torch.cat([torch.full((int(n),), c) for c, n in enumerate(counts)])
    y = y[torch.randperm(N, generator=g)]
    H = torch.arange(N, dtype=F64).unsqueeze(1).expand(N, 2).clone()  # row id as feature
    d = DeferredRows(C, m, torch.device("cpu"))
    passed = []
    for start in range(0, N, 17):
        f, lab = d.route(H[start : start + 17], y[start : start + 17])
        passed.append(lab)
    assert d.held_rows <= (m - 1) * C
    assert torch.equal(d.seen, counts)
    released = d.release(d.seen)
    got = torch.cat(passed + ([released[1]] if released is not None else []))
    kept = counts >= m
    expected = torch.bincount(y[kept[y]], minlength=C)
    assert torch.equal(torch.bincount(got, minlength=C), expected)


# ------------------------------------------------------------------- through the API
import ncmse  # noqa: E402
from ncmse.collapse import decisions  # noqa: E402
from ncmse.errors import EmptyClassError, InputError, LabelError, ShapeError  # noqa: E402

SCALARS = (
    "accuracy", "loss", "nc1", "nc1_trace_ratio", "cdnv", "equinorm_means", "equinorm_classifier",
    "equiangular_means", "equiangular_classifier", "maxangle_means", "maxangle_classifier", "nc3",
    "nc4", "etf_error_means", "etf_error_wm", "loss_nc1", "loss_nc23", "loss_perp", "loss_ls",
)  # fmt: skip


def _zipf_data(C=30, p=8, N=900, seed=0, absent=(3, 17), singles=(5, 9), doubles=(11,)):
    """Imbalanced classes with absent, single-sample and two-sample classes."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, C + 1, dtype=F64)
    for c in (*absent, *singles, *doubles):
        weights[c] = 0.0
    y = torch.multinomial(weights, N, replacement=True, generator=g)
    extra = torch.tensor([*singles, *doubles, *doubles], dtype=torch.long)
    y = torch.cat([y, extra])
    y = y[torch.randperm(len(y), generator=g)]
    means = 3.0 * torch.randn(C, p, generator=g, dtype=F64)
    H = means[y] + torch.randn(len(y), p, generator=g, dtype=F64)
    W = torch.randn(C, p, generator=g, dtype=F64)
    b = torch.randn(C, generator=g, dtype=F64)
    return H, y, W, b


def _assert_same(r1, r2, rel=1e-12):
    for name in SCALARS:
        a, b = getattr(r1, name), getattr(r2, name)
        assert a == pytest.approx(b, rel=rel, abs=1e-14), name
    np.testing.assert_allclose(r1.snr, r2.snr, rtol=1e-10)
    assert (r1.num_samples, r1.num_classes) == (r2.num_samples, r2.num_classes)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_min_samples_equals_measuring_the_subset_directly(m):
    H, y, W, b = _zipf_data()
    C = W.shape[0]
    counts = torch.bincount(y, minlength=C)
    kept = (counts >= m).nonzero().flatten()
    remap = torch.full((C,), -1, dtype=torch.long)
    remap[kept] = torch.arange(len(kept))
    rows = remap[y] >= 0
    direct = ncmse.measure_features(
        H[rows], remap[y[rows]], W[kept], b[kept], num_classes=len(kept), lam=0.01
    )
    sub = ncmse.measure_features(H, y, W, b, num_classes=C, lam=0.01, min_samples=m)
    _assert_same(sub, direct)
    assert sub.num_classes_excluded == C - len(kept)
    assert sub.num_samples_excluded == int(counts[counts < m].sum())
    assert sub.to_dict()["num_classes_excluded"] == C - len(kept)
    # streamed in small batches of random order (rows held back and released for m ≥ 3)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(m))
    batches = [(H[perm[i : i + 37]], y[perm[i : i + 37]]) for i in range(0, len(y), 37)]
    streamed = ncmse.measure_stream(batches, W, b, num_classes=C, lam=0.01, min_samples=m)
    _assert_same(streamed, direct, rel=1e-9)
    assert streamed.num_samples_excluded == sub.num_samples_excluded


def test_min_samples_default_and_errors():
    H, y, W, b = _zipf_data()
    with pytest.raises(EmptyClassError, match="no samples"):
        ncmse.measure_features(H, y, W, b, num_classes=W.shape[0])
    with pytest.raises(EmptyClassError, match="min_samples=10000"):
        ncmse.measure_features(H, y, W, b, num_classes=W.shape[0], min_samples=10_000)
    with pytest.raises(InputError, match="min_samples"):
        ncmse.measure_features(H, y, W, b, num_classes=W.shape[0], min_samples=0)


def test_tiny_tiles_through_the_api_equal_one_tile(monkeypatch):
    """Every pairwise quantity and decision with 3-class tiles equals the single-tile result."""
    H, y, W, b = _zipf_data(C=23, p=6, N=700, absent=(), singles=(), doubles=())
    one = ncmse.measure_features(H, y, W, b, num_classes=23, lam=0.1)
    monkeypatch.setattr(pairwise, "DEFAULT_TILE_BUDGET", 3 * 8 * 3 * 3)
    monkeypatch.setattr(decisions, "DEFAULT_CLASS_TILE", 2)
    assert pairwise.tile_size(23) == 3
    many = ncmse.measure_features(H, y, W, b, num_classes=23, lam=0.1)
    _assert_same(many, one)


def test_float32_decision_path_through_the_api_equals_float64(monkeypatch):
    H, y, W, b = _zipf_data(C=80, p=6, N=3000, absent=(), singles=(), doubles=())
    H = H + 1e3  # an offset: decisions are taken about μ_G
    auto = ncmse.measure_features(H, y, W, b, num_classes=80)  # 2C > p: float32 + re-decision
    original = decisions.TiledDecisions.__init__

    def float64_only(self, *args, **kwargs):
        kwargs["precision"] = "float64"
        original(self, *args, **kwargs)

    monkeypatch.setattr(decisions.TiledDecisions, "__init__", float64_only)
    exact = ncmse.measure_features(H, y, W, b, num_classes=80)
    assert auto.accuracy == exact.accuracy and auto.nc4 == exact.nc4


def test_metric_min_samples_matches_the_api():
    pytest.importorskip("torchmetrics")
    from ncmse.metric import NeuralCollapseMetric

    H, y, W, b = _zipf_data()
    layer = torch.nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(b)
    with pytest.raises(InputError, match="keep_features"):
        NeuralCollapseMetric(layer, lam=0.01, min_samples=2)
    metric = NeuralCollapseMetric(layer, lam=0.01, keep_features=True, min_samples=2)
    for i in range(0, len(y), 100):
        metric.update(H[i : i + 100], y[i : i + 100])
    got = metric.compute()
    want = ncmse.measure_features(H, y, W, b, num_classes=W.shape[0], lam=0.01, min_samples=2)
    _assert_same(got, want)
    assert got.num_classes_excluded == want.num_classes_excluded == 4
    with pytest.raises(ShapeError, match="dimension"):
        metric.update(H[:5, :-1], y[:5])
    with pytest.raises(LabelError):
        metric.update(H[:5], y[:5] + W.shape[0])


@pytest.mark.parametrize("onehot_max", [1024, 0])  # one-hot GEMMs, then index_put_
def test_sync_free_device_update_equals_the_cpu_update(monkeypatch, onehot_max):
    """The accelerator path of ClassStats.update (no host sync), run on CPU tensors."""
    from ncmse.collapse import stats as stats_mod

    monkeypatch.setattr(stats_mod, "_ONEHOT_MAX_CLASSES", onehot_max)
    H, y, *_ = _zipf_data(C=12, p=5, N=400, absent=(4,), singles=(7,), doubles=())
    H = H + 1e4  # the shifts matter
    cpu = stats_mod.ClassStats(12, 5)
    dev = stats_mod.ClassStats(12, 5)
    for i in range(0, len(y), 64):
        cpu.update(H[i : i + 64], y[i : i + 64])
        dev._update_device(H[i : i + 64], y[i : i + 64])
    for a, b in zip(cpu.centred(), dev.centred()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-9)
    assert torch.equal(cpu.shift, dev.shift)  # the same first-block means


@pytest.mark.parametrize("gather", [False, True])
def test_decision_chunks_keep_every_row_in_order(gather):
    from ncmse.collapse.api import _chunks

    src = [(torch.arange(n, dtype=F64).unsqueeze(1) + 100 * i, torch.arange(n) + 100 * i)
           for i, n in enumerate((3, 5, 2, 7, 1))]  # fmt: skip
    out = list(_chunks(src, 4, gather=gather))
    assert all(len(y) <= 4 for _, y in out)
    assert torch.equal(torch.cat([y for _, y in out]), torch.cat([y for _, y in src]))
    assert torch.equal(torch.cat([f for f, _ in out]), torch.cat([f for f, _ in src]))
    if gather:
        assert [len(y) for _, y in out] == [3, 4, 3, 4, 4]


def test_measure_model_with_min_samples_equals_measure_features():
    H, y, W, b = _zipf_data(C=12, p=5, N=300, absent=(2,), singles=(6,), doubles=())
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(5, 12)).double()
    with torch.no_grad():
        model[1].weight.copy_(W)
        model[1].bias.copy_(b)
    loader = [(H[i : i + 50], y[i : i + 50]) for i in range(0, len(y), 50)]
    got = ncmse.measure(model, loader, lam=0.05, min_samples=2)
    want = ncmse.measure_features(H, y, W, b, num_classes=12, lam=0.05, min_samples=2)
    _assert_same(got, want)
    assert (got.num_classes_excluded, got.num_samples_excluded) == (2, 1)
    with pytest.raises(EmptyClassError):
        ncmse.measure(model, loader, lam=0.05)


def test_decisions_of_many_samples_are_taken_in_blocks():
    """More samples than one block: the same decisions as a dense float64 argmax."""
    from ncmse.collapse.decisions import TiledDecisions

    g = torch.Generator().manual_seed(3)
    C, p, N = 7, 5, 2500
    means = torch.randn(C, p, dtype=F64, generator=g)
    W, b = torch.randn(C, p, dtype=F64, generator=g), torch.randn(C, dtype=F64, generator=g)
    H = torch.randn(N, p, dtype=F64, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    rule = TiledDecisions(W, b, means, means.mean(dim=0))
    assert N > rule.block_rows
    got = rule(H, y)
    cls, ncc = (H @ W.T + b).argmax(dim=1), torch.cdist(H, means).argmin(dim=1)
    assert rule.tied == 0  # random data: no ties, the sets are the argmax / argmin
    assert torch.equal(got.mismatch, cls != ncc)
    assert torch.equal(got.credit, (cls == y).to(F64))
