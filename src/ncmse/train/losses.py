"""Training losses and the ridge λ each one implies for the MSE decomposition (SPEC §3).

The decomposition L = L_NC1 + L_NC2/3 + L_⊥ is stated in the convention

    L(W, b, H) = ½ · (1/N) Σ ‖W h + b − e_y‖² + (λ/2)(‖W‖_F² + ‖b‖²).

A training set-up (loss scaling + SGD ``weight_decay``) minimises a multiple of that objective for
one particular λ on the last layer; :func:`build_loss` returns the loss module together with that λ
and a sentence saying how it was derived, so a run can record both.

* ``mse`` with ``reduction="mean"`` (``nn.MSELoss``: mean over N·C entries, target e_y) plus weight
  decay ``wd`` minimises (2/C) × the convention above at **λ = C·wd/2**.
* ``mse`` with ``reduction="sum_classes"`` (mean over samples of ‖f − e_y‖², the paper's notebook)
  gives **λ = wd/2**; ``reduction="half_sum_classes"`` (½ · mean over samples of ‖f − e_y‖², the
  SPEC convention itself) gives **λ = wd**.

The numbers come from :func:`ncmse.collapse.lstsq.lambda_for`; this module adds the loss modules
and the
recorded derivation.
* ``rescaled_mse`` (Hui & Belkin 2021): per-sample (1/C)[k (f_y − M)² + Σ_{j≠y} f_j²]. With k = 1
  it equals M² × the ``mse``/``mean`` loss of the classifier (W/M, b/M), so the decomposition is
  taken for the classifier divided by M at λ = C·wd/2 (exact). With k ≠ 1 the loss weights the true
  class differently and the decomposition is reported at the same λ, as an approximation.
* ``ce`` (cross-entropy) has no MSE counterpart; the decomposition is reported at the λ that the
  same weight decay implies for ``nn.MSELoss`` (λ = C·wd/2), so CE and MSE runs are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ncmse.collapse.lstsq import lambda_for
from ncmse.errors import ConfigError

__all__ = [
    "LOSSES",
    "MSE_REDUCTIONS",
    "LossSpec",
    "MSELoss",
    "RescaledMSELoss",
    "build_loss",
    "lambda_for_training",
]

#: loss names accepted by :func:`build_loss`
LOSSES: tuple[str, ...] = ("mse", "ce", "rescaled_mse")
#: reductions of the plain MSE loss
MSE_REDUCTIONS: tuple[str, ...] = ("mean", "sum_classes", "half_sum_classes")


def _one_hot(target: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(target, num_classes).to(dtype=like.dtype)


class MSELoss(nn.Module):
    """Squared error between the logits and the one-hot target e_y.

    Parameters
    ----------
    num_classes : int
        Number of classes C (the width of the logits).
    reduction : {"mean", "sum_classes", "half_sum_classes"}
        ``"mean"``: mean over all N·C entries, like ``nn.MSELoss()``. ``"sum_classes"``: mean over
        samples of ‖f − e_y‖². ``"half_sum_classes"``: half of that, the SPEC §3 convention.
    """

    def __init__(self, num_classes: int, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in MSE_REDUCTIONS:
            raise ConfigError(
                f"mse_reduction={reduction!r} is not valid; choose one of {list(MSE_REDUCTIONS)}"
            )
        self.num_classes = int(num_classes)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` [B, C] against integer labels ``target`` [B]."""
        onehot = _one_hot(target, self.num_classes, logits)
        if self.reduction == "mean":
            return F.mse_loss(logits, onehot)
        per_sample = (logits - onehot).pow(2).sum(dim=1).mean()
        return per_sample if self.reduction == "sum_classes" else 0.5 * per_sample


class RescaledMSELoss(nn.Module):
    """Rescaled square loss of Hui & Belkin (2021).

    Per sample ``(1/C) [k (f_y − M)² + Σ_{j≠y} f_j²]``, averaged over the batch; ``k = M = 1`` is
    ``nn.MSELoss`` with one-hot targets.

    Parameters
    ----------
    num_classes : int
        Number of classes C.
    k : float
        Weight of the true-class coordinate (> 0).
    m : float
        Target value of the true-class coordinate (> 0).
    """

    def __init__(self, num_classes: int, k: float = 1.0, m: float = 1.0) -> None:
        super().__init__()
        if not k > 0 or not m > 0:
            raise ConfigError(
                f"rescale_k={k!r} and rescale_m={m!r} must both be > 0 (Hui & Belkin use k=1..15, "
                "M=1..30); set them with --set rescale_k=... rescale_m=..."
            )
        self.num_classes = int(num_classes)
        self.k = float(k)
        self.m = float(m)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` [B, C] against integer labels ``target`` [B]."""
        onehot = _one_hot(target, self.num_classes, logits)
        weight = 1.0 + (self.k - 1.0) * onehot
        return (weight * (logits - self.m * onehot).pow(2)).mean()


@dataclass(frozen=True)
class LossSpec:
    """A training loss with the facts the decomposition needs.

    Attributes
    ----------
    name : str
        One of :data:`LOSSES`.
    module : nn.Module
        ``module(logits, labels) -> scalar`` used for back-propagation.
    lam : float
        λ (SPEC §3 convention) at which the decomposition is reported.
    lam_source : str
        How ``lam`` was derived, in words (recorded in the run).
    classifier_scale : float
        Factor applied to the last layer's (W, b) before measuring (1/M for the rescaled MSE).
    exact : bool
        Whether the training objective is exactly a multiple of the SPEC loss at ``lam``.
    """

    name: str
    module: nn.Module
    lam: float
    lam_source: str
    classifier_scale: float = 1.0
    exact: bool = True


def _check_nonneg(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0:
        raise ConfigError(
            f"{name}={value!r} must be a finite number >= 0; fix it with --set {name}="
        )
    return value


def lambda_for_training(
    loss: str,
    *,
    weight_decay: float,
    num_classes: int,
    reduction: str = "mean",
) -> tuple[float, str]:
    """λ (SPEC §3 convention) implied on the last layer by a loss and SGD weight decay.

    Parameters
    ----------
    loss : {"mse", "ce", "rescaled_mse"}
        Training loss.
    weight_decay : float
        SGD ``weight_decay`` (the gradient of (wd/2)‖θ‖²).
    num_classes : int
        Number of classes C.
    reduction : {"mean", "sum_classes", "half_sum_classes"}
        Reduction of the plain MSE loss (ignored for the other losses, which are reported at the
        ``"mean"`` value).

    Returns
    -------
    lam : float
        The ridge λ.
    source : str
        One sentence stating the derivation.
    """
    wd = _check_nonneg("weight_decay", weight_decay)
    c = int(num_classes)
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is not valid; choose one of {list(LOSSES)}")
    if loss == "mse" and reduction not in MSE_REDUCTIONS:
        raise ConfigError(
            f"mse_reduction={reduction!r} is not valid; choose one of {list(MSE_REDUCTIONS)}"
        )
    red = reduction if loss == "mse" else "mean"
    lam = float(lambda_for(loss, red, weight_decay=wd, num_classes=c))
    if loss == "mse":
        return lam, (
            f"{_REDUCTION_TEXT[red]} + SGD weight_decay={wd:g} minimises a multiple of the SPEC "
            f"loss at lam = {_LAM_TEXT[red]} = {lam:g} (C={c})"
        )
    if loss == "rescaled_mse":
        return lam, (
            f"rescaled MSE (Hui & Belkin) + SGD weight_decay={wd:g}: classifier divided by M, "
            f"lam = C*wd/2 = {lam:g} (C={c}); exact when k = 1"
        )
    return lam, (
        f"cross-entropy has no MSE counterpart: reported at the lam that weight_decay={wd:g} "
        f"implies for nn.MSELoss, C*wd/2 = {lam:g} (C={c})"
    )


_REDUCTION_TEXT = {
    "mean": "nn.MSELoss mean over N*C entries",
    "sum_classes": "MSE summed over classes, mean over samples",
    "half_sum_classes": "MSE 1/2 summed over classes, mean over samples (SPEC convention)",
}
_LAM_TEXT = {"mean": "C*wd/2", "sum_classes": "wd/2", "half_sum_classes": "wd"}


def build_loss(
    name: str,
    *,
    num_classes: int,
    weight_decay: float,
    reduction: str = "mean",
    rescale_k: float = 1.0,
    rescale_m: float = 1.0,
    lam: float | None = None,
) -> LossSpec:
    """Build a training loss and the λ at which its run reports the decomposition.

    Parameters
    ----------
    name : {"mse", "ce", "rescaled_mse"}
        Loss name.
    num_classes : int
        Number of classes C.
    weight_decay : float
        SGD weight decay of the run.
    reduction : {"mean", "sum_classes", "half_sum_classes"}
        Reduction of the plain MSE loss.
    rescale_k, rescale_m : float
        Hui & Belkin's k and M (``rescaled_mse`` only).
    lam : float or None
        Explicit λ overriding the derived one (e.g. ``wd/2`` as in the paper's notebook).

    Returns
    -------
    LossSpec
    """
    derived, source = lambda_for_training(
        name, weight_decay=weight_decay, num_classes=num_classes, reduction=reduction
    )
    exact = name == "mse" or (name == "rescaled_mse" and float(rescale_k) == 1.0)
    if lam is not None:
        lam = _check_nonneg("lam", lam)
        source = f"set explicitly in the config (lam={lam:g}); training implies {derived:g}"
        exact = exact and lam == derived
    else:
        lam = derived
    if name == "mse":
        module: nn.Module = MSELoss(num_classes, reduction)
        scale = 1.0
    elif name == "rescaled_mse":
        module = RescaledMSELoss(num_classes, rescale_k, rescale_m)
        scale = 1.0 / float(rescale_m)
    else:
        module = nn.CrossEntropyLoss()
        scale = 1.0
        exact = False
    return LossSpec(name, module, float(lam), source, scale, exact)
