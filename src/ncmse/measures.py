"""Neural-collapse metrics (SPEC §2) as pure functions of class statistics and a classifier.

Geometry conventions: μ_G = (1/C) Σ_c μ_c (the PNAS convention, also under imbalance),
M̄ = [μ_c − μ_G] ∈ R^{p×C}, Σ_W = (1/N) Σ (h − μ_y)(h − μ_y)ᵀ, Σ_B = M̄ M̄ᵀ / C.
Pair statistics (equiangularity, max-angle, CDNV) are taken over the C(C−1)/2 unordered pairs
c < c'; standard deviations use the n−1 denominator.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "centred_means",
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "equinorm",
    "equiangular",
    "maxangle",
    "nc3",
    "etf_error",
    "snr",
    "decisions",
    "Decisions",
    "default_rtol",
]


def default_rtol(dim: int, num_classes: int, dtype: torch.dtype = torch.float64) -> float:
    """Relative singular-value cut-off for pseudo-inverses: ``max(p, C) · eps · 100``."""
    return max(dim, num_classes) * torch.finfo(dtype).eps * 100.0


def centred_means(means: torch.Tensor) -> torch.Tensor:
    """M̄ = [μ_c − μ_G] with μ_G the unweighted mean of the class means. [C, p] → [p, C]."""
    return (means - means.mean(dim=0, keepdim=True)).T


def _upper(mat: torch.Tensor) -> torch.Tensor:
    C = mat.shape[0]
    i, j = torch.triu_indices(C, C, offset=1, device=mat.device)
    return mat[i, j]


def _cosines(vectors: torch.Tensor) -> torch.Tensor:
    """Cosines of the unordered pairs of rows of ``vectors`` [C, d] → [C(C−1)/2]."""
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)
    return _upper(unit @ unit.T)


def nc1(
    sigma_w: torch.Tensor, mbar: torch.Tensor, *, rtol: float | None = None
) -> tuple[float, int]:
    """NC1 = Tr(Σ_W Σ_B^†)/C through the thin SVD of M̄ (never forms the p×p pseudo-inverse).

    With M̄ = U S Vᵀ (keeping s_k > rtol·s_max), Σ_B^† = C U S⁻² Uᵀ, hence
    ``Tr(Σ_W Σ_B^†)/C = Σ_k u_kᵀ Σ_W u_k / s_k²``.

    Parameters
    ----------
    sigma_w : Tensor [p, p]
    mbar : Tensor [p, C]

    Returns
    -------
    value : float
    rank : int   number of singular values kept (≤ min(p, C−1))
    """
    p, C = mbar.shape
    rtol = default_rtol(p, C, mbar.dtype) if rtol is None else rtol
    _, s, vh = torch.linalg.svd(mbar.T, full_matrices=False)  # rows of vh: left sing. vectors of M̄
    keep = s > rtol * s.max()
    s, vh = s[keep], vh[keep]
    quad = ((vh @ sigma_w) * vh).sum(dim=1).clamp_min(0)  # uᵀΣ_W u ≥ 0 up to rounding
    return float((quad / s**2).sum()), int(keep.sum())


def nc1_trace_ratio(sigma_w: torch.Tensor, mbar: torch.Tensor) -> float:
    """Tr Σ_W / Tr Σ_B with Tr Σ_B = ‖M̄‖_F² / C."""
    C = mbar.shape[1]
    return float(sigma_w.trace() / ((mbar * mbar).sum() / C))


def cdnv(means: torch.Tensor, class_var: torch.Tensor) -> float:
    """Mean over pairs c < c' of (σ_c² + σ_c'²) / (2‖μ_c − μ_c'‖²).

    Parameters
    ----------
    means : Tensor [C, p]
    class_var : Tensor [C]   σ_c² = (1/n_c) Σ_{i in c} ‖h_i − μ_c‖²
    """
    sq = (means * means).sum(dim=1)
    dist2 = (sq[:, None] + sq[None, :] - 2.0 * means @ means.T).clamp_min(0)
    num = class_var[:, None] + class_var[None, :]
    return float((_upper(num) / (2.0 * _upper(dist2))).mean())


def equinorm(vectors: torch.Tensor) -> float:
    """Std_c / Avg_c of the row norms of ``vectors`` [C, d] (std with the C−1 denominator)."""
    norms = vectors.norm(dim=1)
    return float(norms.std() / norms.mean())


def equiangular(vectors: torch.Tensor) -> float:
    """Std over pairs c < c' of cos(v_c, v_c') (n−1 denominator; 0 for C = 2, a single pair)."""
    cos = _cosines(vectors)
    return float(cos.std()) if cos.numel() > 1 else 0.0


def maxangle(vectors: torch.Tensor) -> float:
    """Avg over pairs c < c' of |cos(v_c, v_c') + 1/(C−1)|."""
    C = vectors.shape[0]
    return float((_cosines(vectors) + 1.0 / (C - 1)).abs().mean())


def nc3(W: torch.Tensor, mbar: torch.Tensor) -> float:
    """‖Wᵀ/‖W‖_F − M̄/‖M̄‖_F‖_F² (squared). W [C, p], M̄ [p, C]."""
    diff = W.T / W.norm() - mbar / mbar.norm()
    return float((diff * diff).sum())


def etf_error(gram: torch.Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F for a C×C Gram-like matrix G."""
    C = gram.shape[0]
    etf = torch.eye(C, dtype=gram.dtype, device=gram.device) - 1.0 / C
    return float((gram / gram.norm() - etf / math.sqrt(C - 1)).norm())


def snr(sigma_w: torch.Tensor, mbar: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    """Singular values ω_1 ≥ … of Σ_W^{-1/2} M̄ (the whitened class means), min(p, C−1) of them.

    Computed as the singular values of L⁻¹ M̄ for the Cholesky factor Σ_W = L Lᵀ (same singular
    values, since L⁻¹ = O Σ_W^{-1/2} with O orthogonal), which costs p³/3 rather than an
    eigendecomposition. When Σ_W is numerically singular its eigenvalues are floored at
    ``rtol · λ_max`` (so directions with no within-class spread give very large ω, not none).
    """
    p, C = mbar.shape
    k = min(p, C - 1)
    rtol = default_rtol(p, C, sigma_w.dtype) if rtol is None else rtol
    L, info = torch.linalg.cholesky_ex(sigma_w)
    d = L.diagonal()
    if int(info) == 0 and float(d.min() ** 2) > rtol * float(d.max() ** 2):
        x = torch.linalg.solve_triangular(L, mbar, upper=False)
    else:
        evals, evecs = torch.linalg.eigh(sigma_w)
        if float(evals.max()) <= 0.0:  # no within-class variability at all: infinite SNR
            return torch.full((k,), math.inf, dtype=sigma_w.dtype, device=sigma_w.device)
        # Floor the spectrum at rtol·λ_max instead of dropping the null space: class-mean
        # separation along a direction without within-class spread then gives a very large ω
        # (→ ∞ as the spread vanishes) rather than a discontinuous jump to a small one.
        floored = evals.clamp_min(rtol * float(evals.max()))
        x = (evecs.T @ mbar) / floored.sqrt().unsqueeze(1)
    return torch.linalg.svdvals(x)[:k]


class Decisions:
    """Classifier decision argmax(W h + b) (bias included) and nearest-class-mean decision.

    ``argmin_c ‖h − μ_c‖² = argmax_c (hᵀμ_c − ½‖μ_c‖²)``, so both decisions come from one fused
    GEMM ``h [W; M]ᵀ`` per batch: no per-sample loop and no ‖h‖² term to cancel.

    Parameters
    ----------
    W : [C, p], b : [C], means : [C, p]   (the dtype of ``means`` is the compute dtype)
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, means: torch.Tensor) -> None:
        self.num_classes = W.shape[0]
        self.proj = torch.cat([W.to(means), means]).T.contiguous()  # [p, 2C]
        self.offset = torch.cat([b.to(means), -0.5 * (means * means).sum(dim=1)])

    def __call__(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(classifier [B], ncc [B])`` int64 decisions for features [B, p]."""
        scores = torch.addmm(self.offset, features.to(self.proj), self.proj)
        C = self.num_classes
        return scores[:, :C].argmax(dim=1), scores[:, C:].argmax(dim=1)


def decisions(
    features: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    means: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-shot :class:`Decisions`: (argmax(Wh + b), argmin_c ‖h − μ_c‖) of features [B, p]."""
    return Decisions(W, b, means)(features)
