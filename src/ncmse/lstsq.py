"""The least-squares classifier and the exact decomposition of the MSE loss (SPEC §3).

Conventions (SPEC §3)::

    L(W, b, H) = ½ (1/N) Σ ‖W h + b − e_y‖² + (λ/2)(‖W‖_F² + ‖b‖²)
    A          = (1/N) Σ h̃ h̃ᵀ + λ I_{p+1},   h̃ = [h; 1]
    W̃_LS      = (M̃ diag π)ᵀ A⁻¹,              π_c = n_c / N
    L          = L_NC1 + L_NC2/3 + L_⊥

Everything is computed from sufficient statistics (class counts, class means and the pooled
within-class covariance), in float64, with a Cholesky factorisation of ``A`` — never an explicit
inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ncmse.errors import InputError, SingularCovarianceError

__all__ = [
    "Moments",
    "Decomposition",
    "ls_classifier",
    "decompose",
    "mse_loss",
    "lambda_for",
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

    def augmented_second_moment(self, lam: float = 0.0) -> torch.Tensor:
        """A = (1/N) Σ h̃ h̃ᵀ + λ I, shape [p+1, p+1], assembled from Σ_W and the class means."""
        p = self.dim
        mu, pi = self.means, self.weights
        A = torch.empty(p + 1, p + 1, dtype=mu.dtype, device=mu.device)
        A[:p, :p] = self.sigma_w + mu.T @ (pi.unsqueeze(1) * mu)
        m = pi @ mu
        A[:p, p] = m
        A[p, :p] = m
        A[p, p] = 1.0
        if lam:
            A.diagonal().add_(lam)
        return A


@dataclass(frozen=True)
class Decomposition:
    """The SPEC §3 decomposition at one (W, b, H, λ). All values are Python floats."""

    loss: float
    loss_nc1: float
    loss_nc23: float
    loss_perp: float
    loss_ls: float
    lam: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not lam >= 0.0 or lam == float("inf"):
        raise InputError(f"lam (ridge λ of the MSE loss) must be a finite number ≥ 0, got {lam}")
    return lam


def _cholesky(A: torch.Tensor, lam: float, rtol: float) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(A)
    d = L.diagonal() if int(info) == 0 else None
    if (
        d is None
        or not bool(torch.isfinite(d).all())
        or float(d.min() ** 2) <= rtol * float(d.max() ** 2)
    ):
        if lam == 0.0:
            raise SingularCovarianceError(
                "the total covariance Σ_T of the features is singular (fewer independent samples "
                "than feature dimensions, or dead/duplicated features), so the least-squares "
                "classifier at λ = 0 is not unique; pass lam > 0 (e.g. the training weight decay "
                "mapped by ncmse.lstsq.lambda_for)"
            )
        raise SingularCovarianceError(
            f"the ridge-regularised second moment A is numerically singular at lam={lam}; "
            "increase lam"
        )
    return L


def ls_classifier(
    moments: Moments, lam: float = 0.0, *, rtol: float = 1e-13
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge least-squares classifier W̃_LS = (M̃ diag π)ᵀ A⁻¹.

    Parameters
    ----------
    moments : Moments
    lam : float
        λ ≥ 0.
    rtol : float
        A is declared singular when min(diag L)² ≤ rtol · max(diag L)² for its Cholesky factor L.

    Returns
    -------
    W_ls : Tensor [C, p]
    b_ls : Tensor [C]

    Raises
    ------
    SingularCovarianceError
        Σ_T singular at λ = 0 (the message suggests λ > 0).
    """
    lam = _check_lam(lam)
    return _ls_from_second_moment(moments, moments.augmented_second_moment(lam), lam, rtol)


def _ls_from_second_moment(
    moments: Moments, A: torch.Tensor, lam: float, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    L = _cholesky(A, lam, rtol)
    ones = torch.ones(moments.num_classes, 1, dtype=A.dtype, device=A.device)
    rhs = torch.cat([moments.means, ones], dim=1).T * moments.weights  # M̃ diag π, [p+1, C]
    W_aug = torch.cholesky_solve(rhs, L).T  # [C, p+1]
    return W_aug[:, :-1].contiguous(), W_aug[:, -1].contiguous()


def mse_loss(moments: Moments, W: torch.Tensor, b: torch.Tensor, lam: float = 0.0) -> float:
    """L(W, b, H) of SPEC §3 from the moments (exact, no cancellation from raw second moments).

    L = ½ [ tr(W Σ_W Wᵀ) + Σ_c π_c ‖W μ_c + b − e_c‖² ] + (λ/2)(‖W‖² + ‖b‖²)
    """
    lam = _check_lam(lam)
    eye = torch.eye(moments.num_classes, dtype=W.dtype, device=W.device)
    resid = moments.means @ W.T + b - eye  # row c: W μ_c + b − e_c
    within = (W @ moments.sigma_w * W).sum()
    between = (moments.weights * (resid * resid).sum(dim=1)).sum()
    reg = (W * W).sum() + (b * b).sum()
    return float(0.5 * (within + between) + 0.5 * lam * reg)


def decompose(
    moments: Moments,
    W: torch.Tensor,
    b: torch.Tensor,
    lam: float = 0.0,
    *,
    rtol: float = 1e-13,
    ls: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Decomposition:
    """L = L_NC1 + L_NC2/3 + L_⊥ (SPEC §3), each term computed by its own formula.

    Parameters
    ----------
    moments : Moments
    W : Tensor [C, p]
    b : Tensor [C]
    lam : float
    ls : optional precomputed ``ls_classifier(moments, lam)``

    Notes
    -----
    ``L_NC1 = ½[tr(W_LS (Σ_W + λI) W_LSᵀ) + λ‖b_LS‖²]``,
    ``L_NC2/3 = ½ Σ_c π_c ‖W_LS μ_c + b_LS − e_c‖²``,
    ``L_⊥ = ½ tr((W̃ − W̃_LS) A (W̃ − W̃_LS)ᵀ)``.
    ``loss`` is computed independently of the three terms, so their sum checks the identity.
    """
    lam = _check_lam(lam)
    W = W.to(moments.means)
    b = b.to(moments.means)
    A = moments.augmented_second_moment(lam)
    W_ls, b_ls = ls if ls is not None else _ls_from_second_moment(moments, A, lam, rtol)
    eye = torch.eye(moments.num_classes, dtype=W.dtype, device=W.device)

    loss_nc1 = 0.5 * (
        float((W_ls @ moments.sigma_w * W_ls).sum())
        + lam * float((W_ls * W_ls).sum() + (b_ls * b_ls).sum())
    )
    resid = moments.means @ W_ls.T + b_ls - eye
    loss_nc23 = 0.5 * float((moments.weights * (resid * resid).sum(dim=1)).sum())
    D = torch.cat([W - W_ls, (b - b_ls).unsqueeze(1)], dim=1)  # [C, p+1]
    loss_perp = 0.5 * float((D @ A * D).sum())
    return Decomposition(
        loss=mse_loss(moments, W, b, lam),
        loss_nc1=loss_nc1,
        loss_nc23=loss_nc23,
        loss_perp=loss_perp,
        loss_ls=loss_nc1 + loss_nc23,
        lam=lam,
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
    wd = float(weight_decay)
    if not wd >= 0.0:
        raise InputError(f"weight_decay must be ≥ 0, got {weight_decay}")
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
