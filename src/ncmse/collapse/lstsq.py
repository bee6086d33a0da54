"""The least-squares classifier and the exact decomposition of the MSE loss (SPEC §3).

Conventions (SPEC §3)::

    L(W, b, H) = ½ (1/N) Σ ‖W h + b − e_y‖² + (λ/2)(‖W‖_F² + ‖b‖²)
    A          = (1/N) Σ h̃ h̃ᵀ + λ I_{p+1},   h̃ = [h; 1]
    W̃_LS      = (M̃ diag π)ᵀ A⁻¹,              π_c = n_c / N
    L          = L_NC1 + L_NC2/3 + L_⊥

Everything is computed from sufficient statistics (class counts, class means and the pooled
within-class covariance), in float64, through the Schur complement of the constant coordinate of
``A`` (a Cholesky factorisation of Σ_T + λI) — never an explicit inverse, and never the raw second
moment, which squares a common offset of the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ncmse.collapse import pairwise
from ncmse.collapse.geometry import (
    RankTolerance,
    check_rtol,
    cholesky_regular,
    default_rtol,
    eigen_cut,
)
from ncmse.errors import InputError, SingularCovarianceError

__all__ = [
    "Moments",
    "Decomposition",
    "ls_classifier",
    "decompose",
    "mse_loss",
    "lambda_for",
    "check_lam",
]


@dataclass(frozen=True)
class Moments:
    """Sample-weighted moments of labelled features (the decomposition's sufficient statistics).

    Attributes
    ----------
    weights : Tensor [C]      π_c = n_c / N
    means : Tensor [C, p]     μ_c
    sigma_w : Tensor [p, p]   Σ_W = (1/N) Σ (h − μ_y)(h − μ_y)ᵀ
    num_samples : int         N
    """

    weights: torch.Tensor
    means: torch.Tensor
    sigma_w: torch.Tensor
    num_samples: int

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def mean(self) -> torch.Tensor:
        """m = Σ_c π_c μ_c, the sample mean of the features [p]."""
        return self.weights @ self.means

    def total_covariance(self) -> torch.Tensor:
        """Σ_T = Σ_W + Σ_c π_c (μ_c − m)(μ_c − m)ᵀ [p, p], from centred quantities only."""
        d = self.means - self.mean
        return self.sigma_w + d.T @ (self.weights.unsqueeze(1) * d)

    def augmented_second_moment(self, lam: float = 0.0) -> torch.Tensor:
        """A = (1/N) Σ h̃ h̃ᵀ + λ I, shape [p+1, p+1] (for reference; the solver never forms it:
        its top-left block Σ_T + m mᵀ squares a common offset of the features)."""
        p = self.dim
        m = self.mean
        A = torch.empty(p + 1, p + 1, dtype=m.dtype, device=m.device)
        A[:p, :p] = self.total_covariance() + torch.outer(m, m)
        A[:p, p] = m
        A[p, :p] = m
        A[p, p] = 1.0
        if lam:
            A.diagonal().add_(lam)
        return A


@dataclass(frozen=True)
class Decomposition:
    """The SPEC §3 decomposition at one (W, b, H, λ). The losses are Python floats.

    ``min_norm_ls``: Σ_T + λI was below the rank tolerance and the LS classifier is the
    minimum-norm one (exact for a truly singular Σ_T at λ = 0, e.g. dead features; an
    approximation when Σ_T is merely ill-conditioned) — reported as the flag
    ``total_covariance_singular``.
    """

    loss: float
    loss_nc1: float
    loss_nc23: float
    loss_perp: float
    loss_ls: float
    lam: float
    min_norm_ls: bool = False

    def to_dict(self) -> dict[str, float]:
        """The losses and λ."""
        return {k: v for k, v in self.__dict__.items() if k != "min_norm_ls"}


def check_lam(lam: object) -> float:
    """``lam`` as a float, checked: a finite number ≥ 0 (InputError otherwise)."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        try:
            lam = float(lam)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise InputError(
                f"lam (ridge λ of the MSE loss) must be a number ≥ 0, got {lam!r}"
            ) from None
    lam = float(lam)
    if not lam >= 0.0 or lam == float("inf"):
        raise InputError(f"lam (ridge λ of the MSE loss) must be a finite number ≥ 0, got {lam}")
    return lam


class _SymmetricSolver:
    """Solves S x = r for a symmetric positive semi-definite S: Cholesky when S is numerically
    regular (scale-free test: min diag(L)² > rtol · max diag(L)²), otherwise the pseudo-inverse
    through ``eigh`` (eigenvalues ≤ rtol·λ_max dropped), i.e. the minimum-norm solution.

    ``definite=True`` declares S positive definite in exact arithmetic (Σ_T + λI with λ > 0): the
    Cholesky solve is then used whenever the factorisation succeeds, however ill-conditioned S
    is. Truncating such an S would change the answer (it has no null space), so the
    pseudo-inverse is only the last resort when the factorisation itself fails.
    """

    def __init__(
        self, S: torch.Tensor, rtol: float | RankTolerance, *, definite: bool = False
    ) -> None:
        self.chol, self.eig = None, None
        L, info = torch.linalg.cholesky_ex(S)
        if cholesky_regular(L, info, 0.0 if definite else rtol):
            self.chol = L
            return
        evals, evecs = torch.linalg.eigh(S)
        top = float(evals[-1])
        if not torch.isfinite(evals).all():
            raise SingularCovarianceError("the total covariance of the features is not finite")
        inv = (
            torch.where(evals > eigen_cut(rtol, top), 1.0 / evals, torch.zeros_like(evals))
            if top > 0
            else torch.zeros_like(evals)
        )
        self.eig = (evecs, inv)

    @property
    def singular(self) -> bool:
        return self.chol is None

    def __call__(self, rhs: torch.Tensor) -> torch.Tensor:
        if self.chol is not None:
            return torch.cholesky_solve(rhs, self.chol)
        evecs, inv = self.eig
        return evecs @ (inv.unsqueeze(1) * (evecs.T @ rhs))


def ls_classifier(
    moments: Moments, lam: float = 0.0, *, rtol: float | RankTolerance | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge least-squares classifier W̃_LS = (M̃ diag π)ᵀ A⁻¹, without forming A.

    Eliminating the constant coordinate of h̃ exactly (Schur complement of A's entry 1 + λ), with
    m = Σ π_c μ_c, D = [μ_c − m] and β = λ/(1+λ)::

        S     = Σ_T + λ I + β m mᵀ
        W_LSᵀ = S⁻¹ [π_c (μ_c − m + β m)]_c        (λ = 0: Σ_T⁻¹ D diag π, Webb & Lowe)
        b_LS  = (π − W_LS m) / (1 + λ)

    Σ_T is built from centred quantities, so a common offset of the features is never squared;
    the rank-one term is handled by Sherman–Morrison on a factorisation of Σ_T + λ I.

    Parameters
    ----------
    moments : Moments
    lam : float
        λ ≥ 0.
    rtol : float, optional
        Relative tolerance of the regularity test of Σ_T + λI (default
        :func:`ncmse.collapse.geometry.default_rtol` of the moments' dtype).

    Returns
    -------
    W_ls : Tensor [C, p]
    b_ls : Tensor [C]

    Notes
    -----
    At λ = 0 with Σ_T singular (dead or duplicated features, N ≤ p) the classifier is not unique,
    but every §3 quantity is: they depend on the classifier only through W Σ_T Wᵀ and W(μ_c − m),
    which are the same for all minimisers. The minimum-norm minimiser is returned.
    """
    lam = check_lam(lam)
    W_ls, b_ls, *_ = _solve_ls(moments, lam, _rtol(moments, rtol))
    return W_ls, b_ls


def _rtol(moments: Moments, rtol: float | RankTolerance | None) -> float | RankTolerance:
    if rtol is None:
        return default_rtol(moments.dim, moments.num_classes, moments.means.dtype)
    if isinstance(rtol, RankTolerance):
        check_rtol(rtol.rtol)
        return rtol
    return check_rtol(rtol)


def _solve_ls(
    moments: Moments, lam: float, rtol: float | RankTolerance
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """(W_LS, b_LS, Σ_T, minimum-norm?) by the Schur complement of the constant coordinate (see
    ls_classifier); the flag says that Σ_T + λI was solved by its truncated pseudo-inverse."""
    pi, m = moments.weights, moments.mean
    sigma_t = moments.total_covariance()
    S0 = sigma_t
    if lam:
        S0 = sigma_t.clone()
        S0.diagonal().add_(lam)
    solve = _SymmetricSolver(S0, rtol, definite=lam > 0)
    beta = lam / (1.0 + lam)
    rhs = ((moments.means - m) + beta * m).T * pi  # [p, C]
    if not beta:
        X = solve(rhs)
    else:  # Sherman–Morrison for the rank-one term β m mᵀ, one solve for both right-hand sides
        both = solve(torch.cat([rhs, m.unsqueeze(1)], dim=1))
        X, u = both[:, :-1], both[:, -1:]  # S0⁻¹ rhs, S0⁻¹ m
        X = X - u @ (beta * (m @ X) / (1.0 + beta * (m @ u))).unsqueeze(0)
    W_ls = X.T.contiguous()
    b_ls = (pi - W_ls @ m) / (1.0 + lam)
    return W_ls, b_ls, sigma_t, solve.singular


def mse_loss(
    moments: Moments,
    W: torch.Tensor,
    b: torch.Tensor,
    lam: float = 0.0,
    *,
    fit_residual: float | None = None,
) -> float:
    """L(W, b, H) of SPEC §3 from the moments (exact, no cancellation from raw second moments).

    L = ½ [ tr(W Σ_W Wᵀ) + Σ_c π_c ‖W μ_c + b − e_c‖² ] + (λ/2)(‖W‖² + ‖b‖²)

    ``fit_residual``: the sum Σ_c π_c ‖W μ_c + b − e_c‖² when the caller already has it (it is a
    pass over C×C tiles); otherwise it is computed here, tiled, as
    Σ_c π_c ‖W (μ_c − m) + (W m + b) − e_c‖².
    """
    lam = check_lam(lam)
    W, b = W.to(moments.means), b.to(moments.means)
    m = moments.mean
    if fit_residual is None:
        between = pairwise.residual_sq_sum(W, moments.means - m, W @ m + b, moments.weights)
    else:
        between = float(fit_residual)
    within = float((W @ moments.sigma_w * W).sum())
    reg = float((W * W).sum() + (b * b).sum())
    return 0.5 * (within + between) + 0.5 * lam * reg


def decompose(
    moments: Moments,
    W: torch.Tensor,
    b: torch.Tensor,
    lam: float = 0.0,
    *,
    rtol: float | RankTolerance | None = None,
    ls: tuple[torch.Tensor, torch.Tensor] | None = None,
    fit_residual: float | None = None,
) -> Decomposition:
    """L = L_NC1 + L_NC2/3 + L_⊥ (SPEC §3), each term computed by its own formula.

    Parameters
    ----------
    moments : Moments
    W : Tensor [C, p]
    b : Tensor [C]
    lam : float
    rtol : float, optional   tolerance of the regularity test (see :func:`ls_classifier`)
    ls : optional precomputed ``ls_classifier(moments, lam)``
    fit_residual : optional precomputed Σ_c π_c ‖W μ_c + b − e_c‖² (see :func:`mse_loss`)

    Notes
    -----
    ``L_NC1 = ½[tr(W_LS (Σ_W + λI) W_LSᵀ) + λ‖b_LS‖²]``,
    ``L_NC2/3 = ½ Σ_c π_c ‖W_LS (μ_c − m) + (W_LS m + b_LS) − e_c‖²``,
    ``L_⊥ = ½ tr(Δ A Δᵀ) = ½[tr(ΔW (Σ_T + λI) ΔWᵀ) + ‖ΔW m + Δb‖² + λ‖Δb‖²]`` with
    Δ = W̃ − W̃_LS: the same quantities written in centred blocks of A, so that a common offset
    of the features cancels before it is squared.
    ``loss`` is computed independently of the three terms, so their sum checks the identity.
    """
    lam = check_lam(lam)
    W = W.to(moments.means)
    b = b.to(moments.means)
    m = moments.mean
    if ls is None:
        W_ls, b_ls, sigma_t, min_norm = _solve_ls(moments, lam, _rtol(moments, rtol))
    else:
        (W_ls, b_ls), sigma_t, min_norm = ls, moments.total_covariance(), False

    loss_nc1 = 0.5 * (
        float((W_ls @ moments.sigma_w * W_ls).sum())
        + lam * float((W_ls * W_ls).sum() + (b_ls * b_ls).sum())
    )
    # W_LS m + b_LS = β W_LS m + π/(1+λ) exactly (no offset-sized cancellation)
    level = (lam * (W_ls @ m) + moments.weights) / (1.0 + lam)
    loss_nc23 = 0.5 * pairwise.residual_sq_sum(W_ls, moments.means - m, level, moments.weights)
    dW, db = W - W_ls, b - b_ls
    shift = (W @ m + b) - level  # ΔW m + Δb
    loss_perp = 0.5 * float(
        (dW @ sigma_t * dW).sum()
        + lam * ((dW * dW).sum() + (db * db).sum())
        + (shift * shift).sum()
    )
    return Decomposition(
        loss=mse_loss(moments, W, b, lam, fit_residual=fit_residual),
        loss_nc1=loss_nc1,
        loss_nc23=loss_nc23,
        loss_perp=loss_perp,
        loss_ls=loss_nc1 + loss_nc23,
        lam=lam,
        min_norm_ls=min_norm,
    )


#: reduction of the per-sample squared error -> factor f such that the training objective is
#: f·(1/N)Σ‖·‖² (before weight decay); the SPEC convention has f = ½.
_REDUCTIONS = ("mean", "sum_classes", "half_sum_classes", "sum")


def lambda_for(
    loss: str = "mse",
    reduction: str = "mean",
    *,
    weight_decay: float,
    num_classes: int,
    batch_size: int | None = None,
) -> float:
    """The λ of SPEC §3 implied by a training set-up with SGD ``weight_decay``.

    SGD with ``weight_decay = wd`` minimises ``objective + (wd/2)‖θ‖²``. Writing the objective as
    ``f·(1/N)Σ‖Wh+b−e_y‖²`` gives, after dividing by ``2f``, the SPEC loss with ``λ = wd / (2f)``:

    =====================  ============================================  ===================
    reduction              objective                                      λ
    =====================  ============================================  ===================
    ``mean``               ``nn.MSELoss()``: mean over the B·C entries    C·wd/2
    ``sum_classes``        sum over classes, mean over the batch          wd/2 (the notebook)
    ``half_sum_classes``   ½·sum over classes, mean over the batch        wd
    ``sum``                ``nn.MSELoss(reduction='sum')`` per batch B    wd/(2B)
    =====================  ============================================  ===================

    For ``loss`` other than ``"mse"`` (cross-entropy, rescaled MSE) there is no exact mapping; the
    value returned is the λ an MSE run with the same reduction and weight decay would have, so that
    the decomposition is reported on a common scale (state this when comparing).
    """
    if loss not in ("mse", "ce", "rescaled_mse"):
        raise InputError(f"loss must be one of 'mse', 'ce', 'rescaled_mse', got {loss!r}")
    if reduction not in _REDUCTIONS:
        raise InputError(f"reduction must be one of {', '.join(_REDUCTIONS)}; got {reduction!r}")
    try:
        wd = float(weight_decay)
    except (TypeError, ValueError):
        raise InputError(f"weight_decay must be a number ≥ 0, got {weight_decay!r}") from None
    if isinstance(weight_decay, bool) or not 0.0 <= wd < float("inf"):
        raise InputError(f"weight_decay must be a finite number ≥ 0, got {weight_decay!r}")
    C = int(num_classes)
    if C < 2:
        raise InputError(f"num_classes must be ≥ 2, got {num_classes}")
    if reduction == "mean":
        return C * wd / 2.0
    if reduction == "sum_classes":
        return wd / 2.0
    if reduction == "half_sum_classes":
        return wd
    if batch_size is None or int(batch_size) < 1:
        raise InputError("reduction='sum' needs the training batch_size (a positive integer)")
    return wd / (2.0 * int(batch_size))
