"""Neural-collapse metrics (SPEC §2) as pure functions of class statistics and a classifier.

Geometry conventions: μ_G = (1/C) Σ_c μ_c (the PNAS convention, also under imbalance),
M̄ = [μ_c − μ_G] ∈ R^{p×C}, Σ_W = (1/N) Σ (h − μ_y)(h − μ_y)ᵀ, Σ_B = M̄ M̄ᵀ / C.
Pair statistics (equiangularity, max-angle, CDNV) are taken over the C(C−1)/2 unordered pairs
c < c'; standard deviations use the n−1 denominator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ncmse.collapse import pairwise
from ncmse.errors import InputError

__all__ = [
    "default_rtol",
    "check_rtol",
    "RankTolerance",
    "feature_tolerance",
    "singular_cut",
    "eigen_cut",
    "singular_values",
    "no_between_class_spread",
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
    "whitened_spectrum",
    "cholesky_regular",
]


def default_rtol(dim: int, num_classes: int, dtype: torch.dtype = torch.float64) -> float:
    """The one relative tolerance of every rank decision: ``max(p, C) · eps(dtype) · 100``.

    ``dtype`` is the precision of the *statistics* the decision is taken on (SPEC §2, numerical
    requirements): float32 statistics carry rounding noise ~1e-7 relative, far above float64's.
    """
    return max(int(dim), int(num_classes)) * torch.finfo(dtype).eps * 100.0


def check_rtol(rtol: object) -> float:
    """Validate a user tolerance: a finite real number with 0 < rtol < 1, else InputError."""
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise InputError(
            f"rtol must be a number in (0, 1), got {rtol!r}; leave it None for the default"
        )
    value = float(rtol)
    if not (0.0 < value < 1.0):
        raise InputError(
            f"rtol must lie strictly between 0 and 1 (a relative singular-value cut-off), got "
            f"{rtol!r}; leave it None for the default max(p, C)·eps·100"
        )
    return value


@dataclass(frozen=True)
class RankTolerance:
    """The one tolerance of every rank decision (nc1, snr, the LS solve; SPEC §2).

    ``rtol`` is relative, tied to the precision of the statistics (:func:`default_rtol`): a
    singular value s of M̄ counts when s > rtol·s_max, an eigenvalue λ of Σ_W or Σ_T when
    λ > rtol·λ_max. The floors are absolute and come from the precision of the *features as
    given* (:func:`feature_tolerance`): a direction of M̄ or of a covariance made only of the
    features' own rounding is not a direction of the data.

    Attributes
    ----------
    rtol : float            relative tolerance, 0 < rtol < 1
    mean_floor : float      singular values of M̄ at or below it are rounding (first-moment units)
    cov_floor : float       eigenvalues of Σ_W, Σ_T at or below it are rounding (second moments)
    """

    rtol: float
    mean_floor: float = 0.0
    cov_floor: float = 0.0


def _parts(tol: float | RankTolerance) -> tuple[float, float, float]:
    if isinstance(tol, RankTolerance):
        return tol.rtol, tol.mean_floor, tol.cov_floor
    return float(tol), 0.0, 0.0


def singular_cut(tol: float | RankTolerance, s_max: float) -> float:
    """Singular values of M̄ (or of its parts) above this count: max(rtol·s_max, mean_floor)."""
    rtol, floor, _ = _parts(tol)
    return max(rtol * s_max, floor)


def eigen_cut(tol: float | RankTolerance, top: float) -> float:
    """Eigenvalues of a covariance above this count: max(rtol·λ_max, cov_floor)."""
    rtol, _, floor = _parts(tol)
    return max(rtol * top, floor)


#: factor of the feature-rounding floors: twice the worst case of one rounding per entry
_FEATURE_ROUNDING_FACTOR = 4.0


def feature_tolerance(
    rtol: float,
    unit_roundoff: float,
    counts: torch.Tensor,
    means: torch.Tensor,
    within_sq: torch.Tensor,
) -> RankTolerance:
    """:class:`RankTolerance` of features given with unit roundoff u (2⁻²⁴ for float32).

    Every feature entry carries a rounding |δh_j| ≤ u·|h_j|. With m2_c = ‖μ_c‖² + σ_c² the mean
    squared norm of class c's features (as given, uncentred) and κ = 4:

    * the class means move by ‖δμ_c‖ ≤ u·√m2_c, so ‖δM̄‖₂ ≤ u·√(Σ_c m2_c):
      ``mean_floor = κ·u·√(Σ_c m2_c)``;
    * a direction v of zero within-class (or total) variance gets vᵀΣ̂v ≤ mean ‖δz‖² ≤
      (2u)²·mean ‖h‖²: ``cov_floor = κ²·u²·Σ_c π_c m2_c``.

    Parameters
    ----------
    rtol : float            the statistics' relative tolerance
    unit_roundoff : float   u of the features' dtype as given (the coarsest seen)
    counts : [C], means : [C, p], within_sq : [C] (Σ_{i∈c} ‖h_i − μ_c‖²)
    """
    spread = within_sq / counts.clamp_min(1)
    # in units of the largest magnitude a: m2_c / a² never overflows where the statistics did not
    a = max(float(means.abs().max()), float(spread.max().sqrt()))
    if not (a > 0.0 and math.isfinite(a)):
        return RankTolerance(rtol)
    m2 = ((means / a) ** 2).sum(dim=1) + (spread.sqrt() / a) ** 2
    ka = _FEATURE_ROUNDING_FACTOR * unit_roundoff * a
    mean_floor = ka * float(m2.sum().sqrt())
    cov_floor = ka * ka * float((counts * m2).sum() / counts.sum())
    return RankTolerance(rtol, mean_floor, cov_floor)


def singular_values(
    mbar: torch.Tensor, rtol: float | RankTolerance
) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin SVD of M̄ [p, C] truncated to its numerical rank, which is at most C − 1.

    Returns ``(s [r], u [r, p])``: the kept singular values (s_k > rtol·s_max, at most C − 1 of
    them, since the columns of M̄ sum to zero) and the matching left singular vectors as rows.
    """
    _, s, vh = torch.linalg.svd(mbar.T, full_matrices=False)  # rows of vh: left sing. vectors of M̄
    keep = (
        s > singular_cut(rtol, float(s[0]))
        if s.numel() and float(s[0]) > 0
        else torch.zeros_like(s, dtype=torch.bool)
    )
    keep[mbar.shape[1] - 1 :] = False  # rank M̄ ≤ C − 1: the C-th value is rounding of μ_G
    return s[keep], vh[keep]


def no_between_class_spread(means: torch.Tensor, mbar: torch.Tensor, rtol: float) -> bool:
    """True when the class means coincide up to the rounding of their own magnitude.

    Scale-free: ``‖M̄‖_F ≤ rtol · max_c ‖μ_c‖`` (exactly 0 = 0 for dead all-zero features).
    """
    spread = float(mbar.norm())
    return spread == 0.0 or spread <= rtol * float(means.norm(dim=1).max())


def mean_at_global_mean(
    means: torch.Tensor, mbar: torch.Tensor, tol: float | RankTolerance
) -> bool:
    """True when some centred class mean μ_c − μ_G is zero up to rounding: its direction (and so
    its cosine with the other means) is then undefined.

    The rule of :func:`no_between_class_spread`, per class: ``‖μ_c − μ_G‖ ≤ rtol · max ‖μ‖``,
    or at most the features' rounding floor of M̄ (``tol.mean_floor``).
    """
    rtol, mean_floor, _ = _parts(tol)
    norms = mbar.norm(dim=0)
    bound = max(rtol * float(means.norm(dim=1).max()), mean_floor)
    return bool((norms <= bound).any())


def centred_means(means: torch.Tensor) -> torch.Tensor:
    """M̄ = [μ_c − μ_G] with μ_G the unweighted mean of the class means. [C, p] → [p, C]."""
    return (means - means.mean(dim=0, keepdim=True)).T


def nc1(
    sigma_w: torch.Tensor, mbar: torch.Tensor, *, rtol: float | RankTolerance | None = None
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
    value : float   NaN when M̄ has no singular value above the tolerance
    rank : int   number of singular values kept (≤ min(p, C−1))
    """
    p, C = mbar.shape
    rtol = default_rtol(p, C, mbar.dtype) if rtol is None else rtol
    s, vh = singular_values(mbar, rtol)
    if s.numel() == 0:  # no between-class spread: Σ_B = 0 and NC1 is undefined, not 0
        return math.nan, 0
    quad = ((vh @ sigma_w) * vh).sum(dim=1).clamp_min(0)  # uᵀΣ_W u ≥ 0 up to rounding
    return float((quad / s**2).sum()), int(s.numel())


def nc1_trace_ratio(sigma_w: torch.Tensor, mbar: torch.Tensor) -> float:
    """Tr Σ_W / Tr Σ_B with Tr Σ_B = ‖M̄‖_F² / C."""
    C = mbar.shape[1]
    return float(sigma_w.trace() / ((mbar * mbar).sum() / C))


def cdnv(means: torch.Tensor, class_var: torch.Tensor, *, tile: int | None = None) -> float:
    """Mean over pairs c < c' of (σ_c² + σ_c'²) / (2‖μ_c − μ_c'‖²), tiled over classes.

    The means are centred by their mean first (a common offset cancels before any product); the
    distances come from Gram tiles, close pairs from their differences
    (:func:`ncmse.collapse.pairwise.means_pair_stats`). A pair with identical means gives +inf (no
    separation), or NaN when it has no spread either.

    Parameters
    ----------
    means : Tensor [C, p]
    class_var : Tensor [C]   σ_c² = (1/n_c) Σ_{i in c} ‖h_i − μ_c‖²
    """
    centred = means - means.mean(dim=0, keepdim=True)
    return pairwise.means_pair_stats(centred, class_var, tile=tile).cdnv


def equinorm(vectors: torch.Tensor) -> float:
    """Std_c / Avg_c of the row norms of ``vectors`` [C, d] (std with the C−1 denominator)."""
    norms = vectors.norm(dim=1)
    return float(norms.std() / norms.mean())


def equiangular(vectors: torch.Tensor, *, tile: int | None = None) -> float:
    """Std over pairs c < c' of cos(v_c, v_c') (n−1 denominator; 0 for C = 2, a single pair).

    Tiled over classes with Chan's update (:func:`ncmse.collapse.pairwise.angle_stats`).
    """
    return pairwise.angle_stats(vectors, tile=tile).equiangular


def maxangle(vectors: torch.Tensor, *, tile: int | None = None) -> float:
    """Avg over pairs c < c' of |cos(v_c, v_c') + 1/(C−1)|, tiled over classes."""
    return pairwise.angle_stats(vectors, tile=tile).maxangle


def nc3(W: torch.Tensor, mbar: torch.Tensor) -> float:
    """‖Wᵀ/‖W‖_F − M̄/‖M̄‖_F‖_F² (squared). W [C, p], M̄ [p, C]."""
    diff = W.T / W.norm() - mbar / mbar.norm()
    return float((diff * diff).sum())


def etf_error(gram: torch.Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F for a given dense C×C Gram-like matrix G.

    The measurement itself never forms G: :func:`ncmse.collapse.pairwise.means_pair_stats` and
    :func:`ncmse.collapse.pairwise.cross_pass` accumulate the same error over tiles.
    """
    C = gram.shape[0]
    etf = torch.eye(C, dtype=gram.dtype, device=gram.device) - 1.0 / C
    return float((gram / gram.norm() - etf / math.sqrt(C - 1)).norm())


def snr(
    sigma_w: torch.Tensor, mbar: torch.Tensor, *, rtol: float | RankTolerance | None = None
) -> torch.Tensor:
    """Singular values ω_1 ≥ … of Σ_W^{-1/2} M̄; see :func:`whitened_spectrum`."""
    return whitened_spectrum(sigma_w, mbar, rtol=rtol)[0]


def whitened_spectrum(
    sigma_w: torch.Tensor, mbar: torch.Tensor, *, rtol: float | RankTolerance | None = None
) -> tuple[torch.Tensor, bool]:
    """``(ω, Σ_W singular?)``: the singular values ω_1 ≥ … of Σ_W^{-1/2} M̄ (the whitened class
    means), min(p, C−1) of them.

    Regular Σ_W: the singular values of L⁻¹ M̄ for the Cholesky factor Σ_W = L Lᵀ (same values,
    since L⁻¹ = O Σ_W^{-1/2} with O orthogonal), p³/3 flops.

    Singular Σ_W (see :func:`within_class_singular`): the generalised singular values of
    (M̄, Σ_W^{1/2}), i.e. the limit ε → 0 of the values for Σ_W + εI. With Σ_W = Q diag(λ) Qᵀ
    split into its range R (λ > rtol·λ_max) and null space Z: the r₀ = rank(Zᵀ M̄) directions of
    the means outside range(Σ_W) give ω = +inf (exact collapse there), and the others are the
    singular values of Λ_R^{-1/2} Rᵀ M̄ P, P an orthonormal basis of null(Zᵀ M̄) ⊂ R^C. No value
    depends on a floor put under the spectrum.
    """
    p, C = mbar.shape
    k = min(p, C - 1)
    rtol = default_rtol(p, C, sigma_w.dtype) if rtol is None else rtol
    L, info = torch.linalg.cholesky_ex(sigma_w)
    if cholesky_regular(L, info, rtol):
        x = torch.linalg.solve_triangular(L, mbar, upper=False)
        return torch.linalg.svdvals(x)[:k], False
    evals, evecs = torch.linalg.eigh(sigma_w)
    top = float(evals[-1])
    in_range = (
        evals > eigen_cut(rtol, top) if top > 0.0 else torch.zeros_like(evals, dtype=torch.bool)
    )
    coords = evecs.T @ mbar  # M̄ in the eigenbasis of Σ_W, [p, C]
    null_part = coords[~in_range]
    scale = float(mbar.norm())
    whitened = coords[in_range] / evals[in_range].sqrt().unsqueeze(1)  # [r_R, C]
    r0 = 0
    if null_part.numel() and scale > 0.0:
        # thin SVD: never a C×C basis (C may be a vocabulary); the finite values are those of
        # the whitened means restricted to null(Zᵀ M̄), i.e. with the r0 leading right singular
        # directions V0 projected out: X (I − V0ᵀV0) has the singular values of X·basis, plus
        # r0 zeros, which are dropped below
        _, s0, vh0 = torch.linalg.svd(null_part, full_matrices=False)
        r0 = int((s0 > singular_cut(rtol, scale)).sum())
        if r0:
            v0 = vh0[:r0]
            whitened = whitened - (whitened @ v0.T) @ v0
    if whitened.numel():
        finite_sv = torch.linalg.svdvals(whitened)[: min(whitened.shape[0], C - r0)]
    else:
        finite_sv = whitened.new_zeros(0)
    inf = torch.full((r0,), math.inf, dtype=mbar.dtype, device=mbar.device)
    omega = torch.cat([inf, finite_sv])
    if omega.numel() < k:
        omega = torch.cat([omega, omega.new_zeros(k - omega.numel())])
    return omega[:k], True


def cholesky_regular(L: torch.Tensor, info: torch.Tensor, rtol: float | RankTolerance) -> bool:
    """Whether a Cholesky factor (from ``torch.linalg.cholesky_ex``) is of a numerically regular
    matrix: it factorised, and min diag(L)² > :func:`eigen_cut` of max diag(L)² (scale-free for
    a plain rtol; rtol = 0 accepts any successful factorisation)."""
    if int(info) != 0:
        return False
    d2 = L.diagonal().square()
    return bool(torch.isfinite(d2).all()) and float(d2.min()) > eigen_cut(rtol, float(d2.max()))
