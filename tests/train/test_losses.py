"""Training losses and the λ each implies for the SPEC §3 decomposition."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ncmse.errors import ConfigError
from ncmse.train.losses import LOSSES, MSELoss, RescaledMSELoss, build_loss, lambda_for_training

C = 5


def _data(n: int = 40, p: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.arange(n) % C
    return h, y


def _ridge_classifier(h: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """W̃ minimising ½(1/N)Σ‖W̃ h̃ − e_y‖² + (λ/2)‖W̃‖² (SPEC §3), by the normal equations."""
    n = len(h)
    x = torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], dim=1)
    target = F.one_hot(y, C).to(h.dtype)
    a = x.T @ x / n + lam * torch.eye(x.shape[1], dtype=h.dtype)
    return torch.linalg.solve(a, x.T @ target / n).T


def _training_gradient(spec, h, y, w_aug, wd: float) -> torch.Tensor:
    """Gradient of (training loss + (wd/2)‖W̃‖²) at W̃, as SGD with weight_decay sees it."""
    w = w_aug.clone().requires_grad_(True)
    logits = h @ w[:, :-1].T + w[:, -1]
    loss = spec.module(logits, y)
    (grad,) = torch.autograd.grad(loss, w)
    return grad + wd * w.detach()


@pytest.mark.parametrize("reduction", ["mean", "sum_classes", "half_sum_classes"])
def test_mse_lambda_makes_ls_classifier_stationary(reduction: str) -> None:
    h, y = _data()
    wd = 3e-2
    spec = build_loss("mse", num_classes=C, weight_decay=wd, reduction=reduction)
    w_ls = _ridge_classifier(h, y, spec.lam)
    grad = _training_gradient(spec, h, y, w_ls, wd)
    assert grad.abs().max().item() < 1e-12
    assert spec.exact and spec.classifier_scale == 1.0
    # a wrong λ leaves a gradient
    w_bad = _ridge_classifier(h, y, spec.lam * 2)
    assert _training_gradient(spec, h, y, w_bad, wd).abs().max().item() > 1e-4


def test_rescaled_mse_lambda_with_classifier_scale() -> None:
    h, y = _data(seed=1)
    wd, m = 2e-2, 3.0
    spec = build_loss("rescaled_mse", num_classes=C, weight_decay=wd, rescale_m=m)
    assert spec.classifier_scale == pytest.approx(1 / m)
    w_ls = _ridge_classifier(h, y, spec.lam)
    # the trained classifier is M × the SPEC-optimal one
    grad = _training_gradient(spec, h, y, m * w_ls, wd)
    assert grad.abs().max().item() < 1e-12


def test_mse_reductions_relate_by_constants() -> None:
    logits = torch.randn(8, C, dtype=torch.float64)
    y = torch.arange(8) % C
    onehot = F.one_hot(y, C).to(logits.dtype)
    mean = MSELoss(C, "mean")(logits, y)
    assert mean.item() == pytest.approx(nn.MSELoss()(logits, onehot).item(), rel=1e-14)
    assert MSELoss(C, "sum_classes")(logits, y).item() == pytest.approx(C * mean.item(), rel=1e-14)
    half = MSELoss(C, "half_sum_classes")(logits, y).item()
    assert half == pytest.approx(C / 2 * mean.item(), rel=1e-14)


def test_rescaled_mse_matches_hui_belkin_formula() -> None:
    logits = torch.randn(6, C, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    k, m = 4.0, 2.5
    got = RescaledMSELoss(C, k, m)(logits, y).item()
    expected = 0.0
    for i in range(6):
        f = logits[i]
        rest = sum(f[j].item() ** 2 for j in range(C) if j != y[i])
        expected += (k * (f[y[i]].item() - m) ** 2 + rest) / C
    assert got == pytest.approx(expected / 6, rel=1e-13)
    assert RescaledMSELoss(C)(logits, y).item() == pytest.approx(
        MSELoss(C)(logits, y).item(), rel=1e-14
    )


def test_ce_and_overrides_are_stated() -> None:
    ce = build_loss("ce", num_classes=10, weight_decay=5e-4)
    assert isinstance(ce.module, nn.CrossEntropyLoss)
    assert ce.lam == pytest.approx(10 * 5e-4 / 2) and not ce.exact
    assert "cross-entropy" in ce.lam_source
    forced = build_loss("mse", num_classes=10, weight_decay=5e-4, lam=2.5e-4)
    assert forced.lam == 2.5e-4 and not forced.exact and "explicitly" in forced.lam_source
    k2 = build_loss("rescaled_mse", num_classes=10, weight_decay=5e-4, rescale_k=2.0)
    assert not k2.exact


def test_lambda_agrees_with_measurement_core() -> None:
    from ncmse.collapse.lstsq import lambda_for

    for loss in LOSSES:
        lam, text = lambda_for_training(loss, weight_decay=5e-4, num_classes=10)
        assert lam == lambda_for(loss, "mean", weight_decay=5e-4, num_classes=10)
        assert text


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "hinge"}, "hinge"),
        ({"name": "mse", "reduction": "sum"}, "mse_reduction"),
        ({"name": "mse", "weight_decay": -1.0}, "weight_decay"),
        ({"name": "rescaled_mse", "rescale_m": 0.0}, "rescale_m"),
        ({"name": "mse", "lam": -1.0}, "lam"),
    ],
)
def test_invalid_loss_settings_name_the_input(kwargs: dict, fragment: str) -> None:
    args = {"num_classes": C, "weight_decay": 5e-4, **kwargs}
    name = args.pop("name")
    with pytest.raises(ConfigError, match=fragment):
        build_loss(name, **args)
