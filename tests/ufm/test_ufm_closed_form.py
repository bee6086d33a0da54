"""Closed form of the renormalised UFM flows (SPEC §5.3-§5.4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncmse.errors import InputError, ShapeError
from ncmse.ufm import closed_form as cf


def test_spec_example_ratios() -> None:
    """SPEC §5: n = C = 10, ω(0) = (0.3, 1, 3) -> ratio 9.31, 1.135, 1.0009."""
    law = cf.projected_law(10, 10)
    omega = law.omega([1e2, 1e4, 1e6], [0.3, 1.0, 3.0])
    ratio = cf.omega_ratio(omega)
    np.testing.assert_allclose(ratio, [9.31, 1.135, 1.0009], rtol=5e-4)


def test_constants_and_initial_value() -> None:
    law = cf.projected_law(7, 5)
    assert (law.c1, law.c2, law.c3) == (7 * 25, 7 * 5, 7 / 4)
    var = cf.variant_law(7, 5)
    assert (var.c1, var.c2, var.c3) == (7 * 25, 7 * 5 / 2, 0.0)
    w0 = np.array([1e-8, 0.3, 1.0, 3.0, 1e4])
    np.testing.assert_allclose(law.omega(0.0, w0)[0], w0, rtol=1e-14)


@pytest.mark.parametrize("make", [cf.projected_law, cf.variant_law])
def test_law_residual_from_zero_to_1e12(make) -> None:
    law = make(10, 10)
    t = np.concatenate([[0.0], np.logspace(-6, 12, 2000)])
    w0 = np.geomspace(1e-6, 1e3, 9)
    omega = law.omega(t, w0)
    assert np.all(np.isfinite(omega))
    assert np.all(np.diff(omega, axis=0) >= 0)  # ω_j(t) non-decreasing
    lhs = law.invariant(omega)
    rhs = law.invariant(w0)[None, :] + t[:, None]
    assert np.max(np.abs(lhs - rhs) / np.maximum(np.abs(rhs), 1.0)) < 1e-12


def test_rate_is_time_derivative() -> None:
    """dω/dt of the solved law equals ω / (n (C + ω²)²) (projected) by central differences."""
    n, C = 10, 4
    law = cf.projected_law(n, C)
    t, h = np.array([3.0, 300.0, 3e4]), 1e-3
    w0 = [0.5, 2.0]
    deriv = (law.omega(t + h, w0) - law.omega(t - h, w0)) / (2 * h)
    omega = law.omega(t, w0)
    np.testing.assert_allclose(deriv, omega / (n * (C + omega**2) ** 2), rtol=1e-6)
    np.testing.assert_allclose(law.rate(omega), omega / (n * (C + omega**2) ** 2), rtol=1e-13)


def test_asymptote_and_nc1() -> None:
    law = cf.projected_law(10, 10)
    omega = law.omega([1e12], [0.3, 1.0, 3.0])
    np.testing.assert_allclose(omega[0], law.asymptote(1e12), rtol=1e-3)
    var = cf.variant_law(10, 10)
    np.testing.assert_allclose(var.omega([1e12], [2.0])[0], var.asymptote(1e12), rtol=1e-3)
    np.testing.assert_allclose(cf.predicted_nc1(omega), np.sum(omega[0] ** -2.0), rtol=1e-15)
    assert cf.predicted_nc1([[1.0, 2.0]]).shape == (1,)


def test_variant_differs_from_projected() -> None:
    t = [1e4]
    a = cf.projected_law(10, 10).omega(t, [1.0])
    b = cf.variant_law(10, 10).omega(t, [1.0])
    assert abs(a[0, 0] / b[0, 0] - 1) > 0.05


@pytest.mark.parametrize("bad", [[0.0, 1.0], [-1.0], [np.nan], []])
def test_nonpositive_omega_rejected(bad) -> None:
    with pytest.raises((InputError, ShapeError), match="omega0"):
        cf.projected_law(10, 10).omega([1.0], bad)


def test_bad_times_and_sizes_rejected() -> None:
    with pytest.raises(InputError, match="non-negative"):
        cf.projected_law(10, 10).omega([-1.0], [1.0])
    with pytest.raises(InputError, match="C >= 2"):
        cf.projected_law(10, 1)
    with pytest.raises(InputError, match="no closed form"):
        cf.law_for_flow("central", 10, 10)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 200),
    C=st.integers(2, 100),
    w0=st.floats(1e-5, 1e4),
    t=st.floats(0.0, 1e12),
    flow=st.sampled_from(["projected", "variant"]),
)
def test_law_solution_property(n: int, C: int, w0: float, t: float, flow: str) -> None:
    law = cf.law_for_flow(flow, n, C)
    omega = law.omega([t], [w0])[0, 0]
    assert np.isfinite(omega) and omega >= w0 * (1 - 1e-14)
    lhs, rhs = law.invariant(omega), law.invariant(w0) + t
    assert abs(lhs - rhs) <= 1e-12 * max(abs(rhs), abs(law.invariant(w0)), 1.0)
