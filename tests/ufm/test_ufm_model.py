"""UFM features, least-squares classifier and the analytic gradients (SPEC §3, §5.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncmse.errors import InputError, ShapeError, SingularCovarianceError
from ncmse.ufm import model


def _general_features(seed: int = 0) -> torch.Tensor:
    """Features with Σ_W far from I (a random linear map) and a non-zero global mean."""
    H = model.make_features(6, 4, 5, [0.4, 1.3, 2.5], seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    A = torch.randn(5, 5, generator=gen, dtype=torch.float64) + 2 * torch.eye(5)
    return H @ A + torch.randn(5, generator=gen, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_make_features_whitened_with_given_snr() -> None:
    H = model.make_features(5, 4, 6, [0.5, 2.0, 1.0], seed=3)
    assert H.shape == (4, 5, 6) and H.dtype == torch.float64
    torch.testing.assert_close(model.within_cov(H), torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(model.snr(H), torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))


def test_snr_is_affine_invariant() -> None:
    H = model.make_features(6, 4, 5, [0.4, 1.3, 2.5], seed=0)
    torch.testing.assert_close(model.snr(_general_features(0)), model.snr(H))


def test_spec_gradient_equals_autograd() -> None:
    """SPEC §5.2 formula at general Σ_W vs autograd of L_LS(H) = L(W̃_LS(H), H): ≤ 1e-8."""
    for seed in range(3):
        H = _general_features(seed).requires_grad_(True)
        (g_auto,) = torch.autograd.grad(model.loss_ls(H), H)
        assert _rel(model.grad_ls_spec(H.detach()), g_auto) < 1e-8


@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_envelope_gradient_equals_autograd(lam: float) -> None:
    H = _general_features(4).requires_grad_(True)
    (g_auto,) = torch.autograd.grad(model.loss_ls(H, lam), H)
    assert _rel(model.grad_ls_envelope(H.detach(), lam), g_auto) < 1e-8


def test_projected_gradient_is_tangent_part() -> None:
    """At Σ_W = I the dropped part is Φ z (Φ symmetric) and the kept part is orthogonal to it."""
    H = model.make_features(6, 4, 5, [0.4, 1.3, 2.5], seed=2)
    full, proj = model.grad_ls_spec(H), model.projected_grad(H)
    normal = full - proj
    Z = H - H.mean(dim=1, keepdim=True)
    Zf, Nf = Z.reshape(-1, 5), normal.reshape(-1, 5)
    Phi = torch.linalg.lstsq(Zf, Nf).solution
    torch.testing.assert_close(Zf @ Phi, Nf)  # normal part = z Φ
    torch.testing.assert_close(Phi, Phi.T)  # with Φ symmetric
    assert abs(float((proj * normal).sum())) < 1e-14  # orthogonal decomposition
    # a tangent step keeps Σ_W = I to first order
    eps = 1e-6
    dS = (model.within_cov(H - eps * proj) - torch.eye(5, dtype=H.dtype)).norm()
    assert float(dS) < 1e-12


def test_ls_classifier_matches_webb_lowe() -> None:
    """λ = 0, balanced: W_LS = (1/C) M̄^T Σ_T^{-1}, b_LS = 1/C − W_LS μ_G (SPEC §3)."""
    H = _general_features(1)
    C = H.shape[0]
    W, b = model.ls_classifier(H)
    X, _ = model.flatten(H)
    Xc = X - X.mean(0)
    Sigma_T = Xc.T @ Xc / X.shape[0]
    W_ref = torch.linalg.solve(Sigma_T, model.centred_means(H)).T / C
    torch.testing.assert_close(W, W_ref)
    torch.testing.assert_close(b, 1.0 / C - W_ref @ X.mean(0))


def test_flatten_labels() -> None:
    X, y = model.flatten(torch.zeros(3, 2, 4, dtype=torch.float64))
    assert X.shape == (6, 4)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]


def test_bad_dimensions() -> None:
    with pytest.raises(InputError, match="p >= C - 1"):
        model.make_features(10, 10, 5, np.ones(9))
    with pytest.raises(SingularCovarianceError, match="rank"):
        model.make_features(2, 3, 5, [1.0, 2.0])
    with pytest.raises(InputError, match="strictly positive"):
        model.make_features(5, 3, 4, [1.0, 0.0])
    with pytest.raises(ShapeError, match="C - 1"):
        model.make_features(5, 3, 4, [1.0])
    with pytest.raises(ShapeError, match=r"\(C, n, p\)"):
        model.class_means(torch.zeros(4, 5))


def test_singular_within_class_covariance_rejected() -> None:
    H = model.make_features(6, 4, 5, [0.4, 1.3, 2.5], seed=0)
    H[..., 0] = H[..., 0].mean(dim=1, keepdim=True)  # no within-class spread along axis 0
    with pytest.raises(SingularCovarianceError, match="whiten"):
        model.whiten(H)
    with pytest.raises(SingularCovarianceError, match="renormalised flow"):
        model.grad_ls_spec(H)
