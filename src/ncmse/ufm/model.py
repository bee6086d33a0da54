"""Unconstrained features model: balanced feature tensors, LS classifier, analytic gradients.

Features are stored class-structured as ``H`` of shape ``(C, n, p)``: ``H[c, i]`` is
``h_{i,c}``.  :func:`flatten` gives the ``(N, p)`` matrix and labels in class order.
Everything is float64 (the caller's dtype is kept; float64 is what the flows use).

Loss convention (SPEC §3): ``L(W, b, H) = ½ (1/N) Σ ‖W h + b − e_y‖² + (λ/2)(‖W‖² + ‖b‖²)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ncmse.collapse.geometry import default_rtol
from ncmse.errors import InputError, ShapeError, SingularCovarianceError

__all__ = [
    "check_dimensions",
    "make_features",
    "flatten",
    "class_means",
    "centred_means",
    "within_cov",
    "inv_sqrt_psd",
    "whiten",
    "snr",
    "snr_svd",
    "ls_classifier",
    "full_loss",
    "loss_ls",
    "grad_ls_spec",
    "grad_ls_envelope",
    "projected_grad",
]


def check_dimensions(n: int, num_classes: int, p: int) -> None:
    """Reject (n, C, p) for which whitened class means are undefined.

    Needs ``C ≥ 2``, ``n ≥ 2``, ``p ≥ C − 1`` (so that ``M̄`` can have ``C − 1`` nonzero
    singular values) and ``C (n − 1) ≥ p`` (so that Σ_W can have full rank ``p``).
    """
    if num_classes < 2:
        raise InputError(f"need at least C = 2 classes, got C = {num_classes}")
    if n < 2:
        raise InputError(
            f"need n >= 2 samples per class for a within-class covariance, got n = {n}"
        )
    if p < num_classes - 1:
        raise InputError(
            f"feature dimension p = {p} < C - 1 = {num_classes - 1}: the C - 1 whitened "
            f"class-mean singular values need p >= C - 1; use --p {num_classes - 1} or more"
        )
    if num_classes * (n - 1) < p:
        raise SingularCovarianceError(
            f"Σ_W has rank at most C (n - 1) = {num_classes * (n - 1)} < p = {p}, so it cannot "
            f"be whitened; use n >= {math.ceil(p / num_classes) + 1} or p <= "
            f"{num_classes * (n - 1)}"
        )


def _as_structured(H: torch.Tensor) -> torch.Tensor:
    if not isinstance(H, torch.Tensor) or H.ndim != 3:
        shape = tuple(H.shape) if isinstance(H, torch.Tensor) else type(H).__name__
        raise ShapeError(f"features must be a (C, n, p) tensor, got {shape}")
    return H


def flatten(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, n, p)`` features -> ``(N, p)`` matrix and ``(N,)`` int64 labels (class order)."""
    C, n, p = _as_structured(H).shape
    labels = torch.arange(C, device=H.device).repeat_interleave(n)
    return H.reshape(C * n, p), labels


def class_means(H: torch.Tensor) -> torch.Tensor:
    """Class means ``μ_c``; shape ``(C, p)``."""
    return _as_structured(H).mean(dim=1)


def centred_means(H: torch.Tensor) -> torch.Tensor:
    """``M̄ = [μ_c − μ_G]``; shape ``(p, C)`` (balanced: μ_G = mean of the μ_c)."""
    mu = class_means(H)
    return (mu - mu.mean(dim=0, keepdim=True)).T


def within_cov(H: torch.Tensor) -> torch.Tensor:
    """``Σ_W = (1/N) Σ z z^T`` with ``z = h − μ_c``; shape ``(p, p)``, computed from centred z."""
    C, n, p = _as_structured(H).shape
    Z = (H - H.mean(dim=1, keepdim=True)).reshape(C * n, p)
    return Z.T @ Z / (C * n)


def _eigh_checked(S: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    evals, evecs = torch.linalg.eigh(S)
    top = float(evals[-1])
    # the measurement core's one tolerance (SPEC §2: tied to the dtype of the statistics)
    rtol = default_rtol(S.shape[0], S.shape[0], S.dtype)
    if not math.isfinite(top) or not float(evals[0]) > rtol * max(top, 0.0):
        raise SingularCovarianceError(
            f"{what} is singular or not finite (eigenvalues in [{float(evals[0]):.3e}, "
            f"{top:.3e}]), so it cannot be whitened; the features have collapsed within class "
            "or p exceeds C (n - 1): use a renormalised flow, a smaller step, or more samples"
        )
    return evals, evecs


def inv_sqrt_psd(S: torch.Tensor, what: str = "Σ_W") -> torch.Tensor:
    """Symmetric ``S^{-1/2}`` of a positive-definite ``(p, p)`` matrix (raises if singular)."""
    evals, evecs = _eigh_checked(S, what)
    return (evecs * evals.rsqrt()) @ evecs.T


def whiten(H: torch.Tensor) -> torch.Tensor:
    """Renormalise so that ``Σ_W = I``: ``h ← Σ_W^{-1/2} h`` (symmetric root); shape kept."""
    return H @ inv_sqrt_psd(within_cov(H))


def snr_svd(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of the whitened class means ``Σ_W^{-1/2} M̄``, truncated to ``C − 1`` terms.

    Returns
    -------
    U : Tensor, shape (p, C-1)
    omega : Tensor, shape (C-1,), descending
    V : Tensor, shape (C, C-1)
    """
    C = H.shape[0]
    X = inv_sqrt_psd(within_cov(H)) @ centred_means(H)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    k = C - 1
    return U[:, :k], S[:k], Vh[:k].T


def snr(H: torch.Tensor) -> torch.Tensor:
    """SNR singular values ``ω_1 ≥ … ≥ ω_{C−1}`` of ``Σ_W^{-1/2} M̄``; shape ``(C−1,)``."""
    C = H.shape[0]
    evals, evecs = _eigh_checked(within_cov(H), "Σ_W")
    X = (evecs * evals.rsqrt()).T @ centred_means(H)  # orthogonal × Σ_W^{-1/2} M̄
    return torch.linalg.svdvals(X)[: C - 1]


def make_features(
    n: int,
    num_classes: int,
    p: int,
    omega0: Sequence[float] | torch.Tensor,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random balanced features with ``Σ_W = I`` exactly and prescribed SNR singular values.

    ``M̄ = U diag(ω(0)) V^T`` with random orthonormal ``U ∈ R^{p×(C−1)}`` and ``V ∈ R^{C×(C−1)}``,
    ``V^T 1 = 0``; within-class deviations are Gaussian, centred per class and whitened.

    Parameters
    ----------
    n, num_classes, p : int
        Samples per class, classes ``C``, feature dimension.
    omega0 : sequence of float, length C − 1
        Positive initial singular values (any order; sorted descending).
    seed : int
        Seed of a private ``torch.Generator``.

    Returns
    -------
    Tensor, shape (C, n, p)
    """
    check_dimensions(n, num_classes, p)
    w = torch.as_tensor(omega0, dtype=torch.float64).flatten()
    if w.numel() != num_classes - 1:
        raise ShapeError(
            f"omega0 must have C - 1 = {num_classes - 1} values for a simulation (a zero "
            f"singular value is an unstable equilibrium of the flow), got {w.numel()}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
        raise InputError(
            f"omega0 must be finite and strictly positive, got {w.tolist()}; a zero or negative "
            "SNR singular value is meaningless, pass positive values such as 0.3,1,3"
        )
    w = torch.sort(w, descending=True).values
    gen = torch.Generator().manual_seed(int(seed))
    C, k = num_classes, num_classes - 1
    U, _ = torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64))
    G = torch.randn(C, k, generator=gen, dtype=torch.float64)
    V, _ = torch.linalg.qr(G - G.mean(dim=0, keepdim=True))
    Mbar = (U * w) @ V.T  # (p, C)
    Z = torch.randn(C, n, p, generator=gen, dtype=torch.float64)
    Z = Z - Z.mean(dim=1, keepdim=True)
    Z = Z @ inv_sqrt_psd(within_cov(Z), "Σ_W of the random within-class deviations")
    H = Mbar.T[:, None, :] + Z
    return H.to(dtype=dtype, device=device)


def ls_classifier(H: torch.Tensor, lam: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares classifier ``W̃_LS = (1/C) M̃^T A^{-1}`` (SPEC §3, balanced).

    ``A = (1/N) Σ h̃ h̃^T + λ I`` with ``h̃ = [h; 1]``; solved by Cholesky in the input dtype.

    Returns
    -------
    W : Tensor, shape (C, p)
    b : Tensor, shape (C,)
    """
    C, n, p = _as_structured(H).shape
    X, _ = flatten(H)
    Xa = torch.cat([X, torch.ones(C * n, 1, dtype=X.dtype, device=X.device)], dim=1)
    A = Xa.T @ Xa / (C * n) + lam * torch.eye(p + 1, dtype=X.dtype, device=X.device)
    Ma = torch.cat([class_means(H), torch.ones(C, 1, dtype=X.dtype, device=X.device)], dim=1)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        raise SingularCovarianceError(
            "the augmented second moment A = (1/N) Σ h̃ h̃^T + λI is singular, so the "
            "least-squares classifier is undefined; use λ > 0 or features of full rank"
        )
    Wt = torch.cholesky_solve(Ma.T, L).T / C  # (C, p+1)
    return Wt[:, :p], Wt[:, p]


def full_loss(W: torch.Tensor, b: torch.Tensor, H: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """``L(W, b, H)`` of SPEC §3 for class-structured ``H`` (targets ``e_c``); 0-d tensor."""
    C, n, _ = _as_structured(H).shape
    pred = H @ W.T + b  # (C, n, C)
    target = torch.eye(C, dtype=H.dtype, device=H.device)[:, None, :]
    fit = 0.5 * ((pred - target) ** 2).sum() / (C * n)
    return fit + 0.5 * lam * ((W**2).sum() + (b**2).sum())


def loss_ls(H: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """``L_LS(H) = L(W_LS(H), b_LS(H), H)``; differentiable in ``H`` (0-d tensor)."""
    W, b = ls_classifier(H, lam)
    return full_loss(W, b, H, lam)


def _k_matrix(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Σ_W^{-1} M̄, K)`` with ``K = (C I + M̄^T Σ_W^{-1} M̄)^{-2}``, plus z (C, n, p)."""
    C = H.shape[0]
    Sw = within_cov(H)
    Mbar = centred_means(H)
    chol, info = torch.linalg.cholesky_ex(Sw)
    if int(info) != 0:
        raise SingularCovarianceError(
            "Σ_W is singular, so the central-path gradient (which needs Σ_W^{-1}) is undefined; "
            "the within-class variability has collapsed: use a renormalised flow instead"
        )
    SinvM = torch.cholesky_solve(Mbar, chol)  # (p, C)
    P = Mbar.T @ SinvM
    P = 0.5 * (P + P.T)
    evals, Q = torch.linalg.eigh(C * torch.eye(C, dtype=H.dtype, device=H.device) + P)
    K = (Q / evals**2) @ Q.T
    Z = H - H.mean(dim=1, keepdim=True)
    return SinvM, K, Z


def grad_ls_spec(H: torch.Tensor) -> torch.Tensor:
    """Euclidean gradient of ``L_LS`` at ``λ = 0`` (SPEC §5.2).

    ``∇_{h_{i,c}} L_LS = −(1/n) Σ_W^{-1} M̄ K e_c + (1/(nC)) Σ_W^{-1} M̄ K M̄^T Σ_W^{-1} z_{i,c}``,
    ``K = (C I + M̄^T Σ_W^{-1} M̄)^{-2}``, ``z_{i,c} = h_{i,c} − μ_c``.

    Returns
    -------
    Tensor, shape (C, n, p)
    """
    C, n, _ = H.shape
    SinvM, K, Z = _k_matrix(H)
    B = SinvM @ K  # (p, C)
    mean_term = -(B.T / n)[:, None, :]  # row c: −(1/n) (Σ_W^{-1} M̄ K e_c)^T
    S = B @ SinvM.T  # Σ_W^{-1} M̄ K M̄^T Σ_W^{-1}, symmetric
    return mean_term + (Z @ S) / (n * C)


def projected_grad(H: torch.Tensor) -> torch.Tensor:
    """Tangential part of :func:`grad_ls_spec` on ``{Σ_W = I}`` (SPEC §5.3).

    At ``Σ_W = I`` the normal space is ``{Φ z : Φ symmetric}``; the second term of the
    gradient lies in it and drops, leaving ``−(1/n) M̄ K e_c`` for every sample of class c.

    Returns
    -------
    Tensor, shape (C, n, p) (constant within each class)
    """
    C, n, p = H.shape
    SinvM, K, _ = _k_matrix(H)
    return (-(SinvM @ K).T / n)[:, None, :].expand(C, n, p)


def grad_ls_envelope(H: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """Gradient of ``L_LS`` for any ``λ`` by the envelope theorem.

    ``∇_{h_{i,c}} L_LS = (1/N) W_LS^T (W_LS h_{i,c} + b_LS − e_c)`` (the classifier is optimal,
    so its dependence on ``H`` does not contribute).

    Returns
    -------
    Tensor, shape (C, n, p)
    """
    C, n, _ = H.shape
    W, b = ls_classifier(H, lam)
    target = torch.eye(C, dtype=H.dtype, device=H.device)[:, None, :]
    resid = H @ W.T + b - target  # (C, n, C)
    return resid @ W / (C * n)
