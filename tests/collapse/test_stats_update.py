"""The streaming statistics' update paths against a float64 two-pass reference.

The CPU update works in chunks of ``_CPU_ROWS`` rows through reused buffers and adds only the
upper block-triangle of the scatter (row panels, :func:`ncmse.collapse.stats._panels`); the blocks
below
the diagonal are filled when the scatter is read. These tests reach every panel count, chunk
boundaries, every input dtype and every reader of the state.
"""

from __future__ import annotations

import math

import pytest
import torch

import ncmse
from ncmse.collapse.stats import _CPU_ROWS, ClassStats, _panels, merge


def reference(H: torch.Tensor, y: torch.Tensor, C: int):
    """(counts, means, pooled within scatter, per-class Σ‖h − μ_c‖²) in float64, two passes."""
    H = H.double()
    counts = torch.bincount(y, minlength=C).double()
    means = torch.zeros(C, H.shape[1], dtype=torch.float64).index_add_(0, y, H) / counts[:, None]
    Z = H - means[y]
    within_sq = torch.zeros(C, dtype=torch.float64).index_add_(0, y, (Z * Z).sum(dim=1))
    return counts, means, Z.T @ Z, within_sq


def make(N: int, p: int, C: int, seed: int = 0, dtype=torch.float32, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(C, p, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    y[:C] = torch.arange(C)
    H = means[y] + 0.5 * torch.randn(N, p, generator=g, dtype=torch.float64) + offset
    return H.to(dtype), y


def assert_matches(stats: ClassStats, H: torch.Tensor, y: torch.Tensor, rtol: float = 1e-11):
    counts, means, within, within_sq = reference(H, y, stats.num_classes)
    got_counts, got_means, got_within_sq, got_within = stats.centred()
    torch.testing.assert_close(got_counts, counts, rtol=0, atol=0)
    scale = float(within.diagonal().max())
    torch.testing.assert_close(got_means, means, rtol=rtol, atol=rtol * float(means.abs().max()))
    torch.testing.assert_close(got_within, within, rtol=rtol, atol=rtol * scale)
    torch.testing.assert_close(got_within_sq, within_sq, rtol=rtol, atol=rtol * scale)
    S = stats.scatter  # the blocks below the diagonal are filled (symmetric to rounding)
    torch.testing.assert_close(S, S.T, rtol=1e-13, atol=1e-13 * float(S.diagonal().abs().max()))


@pytest.mark.parametrize("p", [7, 64, 127, 128, 200, 512, 1000])
def test_every_panel_count_matches_reference(p):
    H, y = make(2 * _CPU_ROWS + 37, p, C=5, seed=p)  # three chunks, the last a partial one
    stats = ClassStats(5, p)
    stats.update(H, y)
    assert_matches(stats, H, y)


@pytest.mark.parametrize("dim", [1, 63, 64, 128, 511, 512, 513, 1023, 1024, 2048, 5000])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_panels_tile_the_upper_block_triangle(dim, device):
    bounds = _panels(dim, torch.device(device))
    assert bounds[0][0] == 0 and bounds[-1][1] == dim
    assert all(hi > lo for lo, hi in bounds)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert len(bounds) <= (8 if device == "cpu" else 4)
    # contiguous panels from 0 to dim: each entry (i ≤ j) is written by exactly one S[lo:hi, lo:]


@pytest.mark.parametrize(
    "feature_dtype,state_dtype,rtol",
    [
        (torch.float32, torch.float64, 1e-11),
        (torch.float16, torch.float64, 1e-11),
        (torch.bfloat16, torch.float64, 1e-11),
        (torch.float64, torch.float64, 1e-11),
        (torch.float64, torch.float32, 2e-4),  # float64 features into float32 statistics
    ],
)
def test_input_dtypes(feature_dtype, state_dtype, rtol):
    H, y = make(1500, 160, C=4, seed=3, dtype=feature_dtype)
    stats = ClassStats(4, 160, dtype=state_dtype)
    stats.update(H, y)
    # the reference sees exactly the values the statistics were given
    expected = H if state_dtype == torch.float64 else H.to(state_dtype)
    assert_matches(stats.to_like(ClassStats(4, 160)), expected, y, rtol=rtol)


def test_batches_in_any_order_and_size_agree():
    H, y = make(3000, 256, C=6, seed=5)
    one = ClassStats(6, 256)
    one.update(H, y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    parts = ClassStats(6, 256)
    for start, size in ((0, 1), (1, 700), (701, 2048), (2749, 251)):
        idx = perm[start : start + size]
        parts.update(H[idx], y[idx])
    for a, b in zip(one.centred(), parts.centred()):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-9)


def test_readers_see_the_full_scatter_after_a_partial_update():
    """state_tensors, clone, to_like, merge, from_state and a further update after a read."""
    H, y = make(2500, 300, C=5, seed=7)
    a = ClassStats(5, 300)
    a.update(H[:1200], y[:1200])
    snap = {k: v.clone() for k, v in a.state_tensors().items()}
    lower = snap["scatter"].tril(-1)
    torch.testing.assert_close(lower, snap["scatter"].triu(1).T, rtol=1e-13, atol=1e-10)
    a.update(H[1200:], y[1200:])  # updates after a read: the filled lower blocks go stale again
    assert_matches(a, H, y)
    assert_matches(a.clone(), H, y)
    restored = ClassStats.from_state(5, 300, snap)
    restored.update(H[1200:], y[1200:])
    assert_matches(restored, H, y)
    b1, b2 = ClassStats(5, 300), ClassStats(5, 300)
    b1.update(H[:900], y[:900])
    b2.update(H[900:], y[900:])
    assert_matches(merge(b1, b2), H, y)
    as32 = a.to_like(ClassStats(5, 300, dtype=torch.float32))
    torch.testing.assert_close(as32.scatter, as32.scatter.T, rtol=1e-6, atol=1e-4)


def test_device_path_matches_reference_on_the_host():
    """The accelerator update (one-hot GEMMs, no host sync) run on CPU tensors."""
    H, y = make(2100, 256, C=5, seed=11)
    stats = ClassStats(5, 256)
    for start in range(0, len(y), 700):
        stats._update_device(H[start : start + 700].double(), y[start : start + 700])
    assert_matches(stats, H, y)


def test_collapse_under_a_large_offset_stays_exact():
    """Shifted accumulation through the chunked path: offset 1e4, within-class spread 5e-1."""
    H, y = make(2200, 256, C=4, seed=2, dtype=torch.float64, offset=1e4)
    stats = ClassStats(4, 256)
    stats.update(H, y)
    assert_matches(stats, H, y, rtol=1e-9)


def test_finite_check_survives_an_overflowing_float32_sum():
    """Finite float32 features whose float32 sum overflows are not reported as NaN/Inf."""
    H, y = make(64, 8, C=2, seed=0)
    H[:, 0] = 3.0e38
    W = torch.randn(2, 8)
    r = ncmse.measure_features(H, y, W, None, num_classes=2)
    assert r.num_samples == 64
    exact = ncmse.measure_features(H.double(), y, W, None, num_classes=2)
    assert r.flags == exact.flags
    for name, value in exact.to_dict().items():  # the same result as the float64 features
        if isinstance(value, float):
            got = getattr(r, name)
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(
                value, rel=1e-12
            ), name
    H[5, 3] = float("nan")
    with pytest.raises(ncmse.errors.NonFiniteError):
        ncmse.measure_features(H, y, W, None, num_classes=2)


def test_measure_features_equals_float64_reference_at_panel_sizes():
    """End to end at p = 512 (eight panels): nc1 from the reference statistics."""
    H, y = make(3000, 512, C=10, seed=4)
    W, b = torch.randn(10, 512, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    got = ncmse.measure_features(H, y, W, b, num_classes=10, lam=1e-3)
    counts, means, within, _ = reference(H, y, 10)
    sigma_w = within / len(y)
    mbar = (means - means.mean(dim=0)).T
    sigma_b = mbar @ mbar.T / 10
    nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / 10)
    assert got.nc1 == pytest.approx(nc1, rel=1e-8)
