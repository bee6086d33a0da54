"""Simulated UFM flows vs the closed form (SPEC §5.2-§5.4, §7 claim 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncmse
from ncmse.errors import DivergenceError, InputError
from ncmse.ufm import closed_form, flows, model

N_PER, C, P = 10, 10, 20
OMEGA0 = np.concatenate([[3.0, 1.0, 0.3], np.geomspace(0.4, 2.5, 6)])


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return model.make_features(N_PER, C, P, OMEGA0, seed=0)


@pytest.fixture(scope="module")
def long_runs(features: torch.Tensor) -> dict[str, flows.FlowResult]:
    """Both renormalised flows to t = 1e6, adaptive Heun (rel_step 1e-2)."""
    times = flows.log_times(1e6, 25)
    return {
        name: flows.simulate_flow(features, flow=name, times=times, rel_step=1e-2)
        for name in ("projected", "variant")
    }


@pytest.mark.parametrize("name", ["projected", "variant"])
def test_closed_form_matches_simulation(long_runs, name: str) -> None:
    """Tolerance: ≤ 1e-3 relative in every ω_j over t ∈ [0, 1e6] (observed ~1e-5)."""
    res = long_runs[name]
    pred = closed_form.law_for_flow(name, N_PER, C).omega(res.times, np.sort(OMEGA0)[::-1])
    assert np.max(np.abs(res.omega / pred - 1)) <= 1e-3
    assert res.step_rule.startswith("adaptive rel_step=0.01")


def test_variant_does_not_obey_projected_law(long_runs) -> None:
    res = long_runs["variant"]
    wrong = closed_form.projected_law(N_PER, C).omega(res.times, np.sort(OMEGA0)[::-1])
    assert np.max(np.abs(res.omega / wrong - 1)) > 0.1


def test_spec_example_ratio_in_simulation(long_runs) -> None:
    """ω_max/ω_min of the simulation at t = 1e2, 1e4, 1e6 ≈ 9.31, 1.135, 1.0009 (SPEC §5)."""
    res = long_runs["projected"]
    # the record grid (25 points from 1e-2 to 1e6) contains 1e2, 1e4 and 1e6
    idx = [int(np.argmin(np.abs(res.times - t))) for t in (1e2, 1e4, 1e6)]
    np.testing.assert_allclose(res.times[idx], [1e2, 1e4, 1e6], rtol=1e-12)
    got = closed_form.omega_ratio(res.omega[idx])
    np.testing.assert_allclose(got, [9.31, 1.135, 1.0009], rtol=1e-3)


@pytest.mark.parametrize("name", ["projected", "variant"])
def test_singular_vectors_constant(long_runs, name: str) -> None:
    """|<u_j(t), u_j(0)>| = 1 to 1e-6 (the gaps between the ω_j shrink to ~1e-3 at t = 1e6,
    which amplifies rounding in the singular vectors; a rotating basis would give O(1))."""
    res = long_runs[name]
    for vecs in (res.left_vectors, res.right_vectors):
        overlap = np.abs(np.einsum("tij,ij->tj", vecs, vecs[0]))
        assert np.max(np.abs(overlap - 1.0)) < 1e-6


def test_within_class_deviations_frozen(features: torch.Tensor) -> None:
    res = flows.simulate_flow(features, flow="projected", times=np.array([0.0, 1e3]),
                              rel_step=2e-2)  # fmt: skip
    Z0 = features - features.mean(dim=1, keepdim=True)
    Z1 = res.features - res.features.mean(dim=1, keepdim=True)
    torch.testing.assert_close(Z1, Z0, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.within_cov(res.features), torch.eye(P, dtype=torch.float64))


@pytest.mark.parametrize("name", ["projected", "variant"])
def test_conservation_drift_shrinks_with_step(name: str) -> None:
    """F(ω(t)) − t − F(ω(0)) with fixed steps: Euler drift ∝ dt, Heun drift ∝ dt².

    Stated tolerance: Heun at dt = 4 keeps the drift below 1e-4 · t at t = 400.
    """
    n, c, p = 5, 4, 4
    H = model.make_features(n, c, p, [0.5, 1.0, 2.0], seed=0)
    law = closed_form.law_for_flow(name, n, c)
    times = np.array([0.0, 400.0])

    def drift(dt: float, method: str) -> float:
        res = flows.simulate_flow(H, flow=name, times=times, dt=dt, method=method)
        return float(np.max(np.abs(law.invariant(res.omega[-1]) - law.invariant(res.omega[0])
                                    - times[-1])))  # fmt: skip

    e1, e2 = drift(4.0, "euler"), drift(2.0, "euler")
    h1, h2 = drift(8.0, "heun"), drift(4.0, "heun")
    assert 1.8 < e1 / e2 < 2.2
    assert 3.5 < h1 / h2 < 4.5
    assert h2 < 1e-4 * times[-1]


def test_collapse_at_large_time(features: torch.Tensor) -> None:
    """NC1 = Σ ω⁻², and NC2-NC4 (LS classifier) go to 0 as t grows (SPEC §5 consequences)."""
    rows = []

    def on_record(t: float, H: torch.Tensor) -> None:
        W, b = model.ls_classifier(H)
        X, y = model.flatten(H)
        rows.append(ncmse.measure_features(X, y, W, b, num_classes=C).to_dict())

    times = np.array([0.0, 1e2, 1e4, 1e6, 1e8])
    res = flows.simulate_flow(features, flow="projected", times=times, rel_step=2e-2,
                              on_record=on_record)  # fmt: skip
    nc1 = np.array([r["nc1"] for r in rows])
    np.testing.assert_allclose(nc1, closed_form.predicted_nc1(res.omega), rtol=1e-8)
    for key in ("equinorm_means", "equiangular_means", "maxangle_means", "nc3",
                "equinorm_classifier", "equiangular_classifier", "etf_error_means"):  # fmt: skip
        values = np.array([r[key] for r in rows[1:]])
        assert np.all(np.diff(values) < 0), key
        assert values[-1] < 1e-3 * values[0], key
    assert rows[-1]["nc4"] == 0.0 and rows[-1]["accuracy"] == 1.0
    assert rows[-1]["equinorm_means"] < 1e-4


def test_central_flow_descends_and_matches_lambda(features: torch.Tensor) -> None:
    times = np.array([0.0, 10.0, 100.0, 1e3])
    losses: list[float] = []
    res = flows.simulate_flow(
        features,
        flow="central",
        times=times,
        rel_step=2e-2,
        on_record=lambda t, H: losses.append(float(model.loss_ls(H))),
    )
    assert np.all(np.diff(losses) < 0)
    assert np.all(res.omega[-1] > res.omega[0])
    lam_losses: list[float] = []
    flows.simulate_flow(
        features,
        flow="central",
        times=times,
        rel_step=2e-2,
        lam=0.01,
        on_record=lambda t, H: lam_losses.append(float(model.loss_ls(H, 0.01))),
    )
    assert np.all(np.diff(lam_losses) < 0)


def test_divergent_step_detected(features: torch.Tensor) -> None:
    with pytest.raises(DivergenceError, match="too large"):
        flows.simulate_flow(features, flow="projected", times=np.array([0.0, 1e6]), dt=1e5)


def test_bad_flow_arguments(features: torch.Tensor) -> None:
    t = np.array([0.0, 1.0])
    with pytest.raises(InputError, match="unknown flow"):
        flows.simulate_flow(features, flow="nope", times=t, dt=0.1)
    with pytest.raises(InputError, match="exactly one"):
        flows.simulate_flow(features, times=t)
    with pytest.raises(InputError, match="integrator"):
        flows.simulate_flow(features, times=t, dt=0.1, method="rk45")
    with pytest.raises(InputError, match="starting at 0"):
        flows.simulate_flow(features, times=np.array([1.0, 2.0]), dt=0.1)
    with pytest.raises(InputError, match="central"):
        flows.simulate_flow(features, times=t, dt=0.1, lam=0.1)
