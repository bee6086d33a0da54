"""Plain gradient descent on the unconstrained features model (SPEC §5.1).

Objective (SPEC §3 convention plus an optional feature penalty)::

    J(W, b, H) = ½ (1/N) Σ ‖W h + b − e_y‖² + (λ/2)(‖W‖_F² + ‖b‖²) + (λ_H / 2)(1/N) ‖H‖_F²

Simultaneous GD steps ``W ← W − η ∇_W J``, ``b ← b − η ∇_b J``, ``H ← H − η_H ∇_H J``.
Because every ``∇_h J`` carries the factor ``1/N``, the feature learning rate defaults to
``η_H = N η`` (GD on each feature for its own sample's loss); pass ``lr_features = lr`` for
literally one learning rate.  The decomposition is measured at ``λ`` (the classifier ridge),
on ``L`` without the feature penalty, so ``L = L_NC1 + L_NC2/3 + L_⊥`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ncmse.collapse.api import measure_features
from ncmse.errors import DivergenceError, InputError
from ncmse.ufm import model
from ncmse.ufm.flows import small_problem_threads

__all__ = [
    "DIVERGENCE_FACTOR",
    "GDState",
    "GDResult",
    "init_gd",
    "log_steps",
    "gd_metrics",
    "run_gd",
]

#: the loss may grow by this factor over its initial value before GD counts as divergent
DIVERGENCE_FACTOR = 1e6


@dataclass
class GDState:
    """Parameters of the UFM: ``W`` (C, p), ``b`` (C,), ``H`` (C, n, p)."""

    W: torch.Tensor
    b: torch.Tensor
    H: torch.Tensor


@dataclass
class GDResult:
    """Records of a GD run: ``steps`` (R,) and one metrics dict per record (SPEC names)."""

    steps: np.ndarray
    records: list[dict]
    state: GDState
    lr: float
    lr_features: float


def init_gd(
    n: int,
    num_classes: int,
    p: int,
    *,
    seed: int = 0,
    feature_scale: float = 1.0,
    weight_scale: float = 0.1,
    device: torch.device | str | None = None,
) -> GDState:
    """Gaussian initial features ``N(0, feature_scale²)``, small classifier, zero bias (float64)."""
    model.check_dimensions(n, num_classes, p)
    gen = torch.Generator().manual_seed(int(seed))
    H = feature_scale * torch.randn(num_classes, n, p, generator=gen, dtype=torch.float64)
    W = weight_scale * torch.randn(num_classes, p, generator=gen, dtype=torch.float64)
    b = torch.zeros(num_classes, dtype=torch.float64)
    return GDState(W=W.to(device), b=b.to(device), H=H.to(device))


def log_steps(steps: int, num: int) -> np.ndarray:
    """Step 0 and about ``num`` distinct log-spaced steps up to ``steps`` (int64, increasing)."""
    if steps < 1 or num < 1:
        raise InputError(f"need steps >= 1 and num >= 1, got steps={steps}, num={num}")
    grid = np.unique(np.round(np.geomspace(1, steps, num)).astype(np.int64))
    return np.concatenate([[0], grid])


def gd_metrics(state: GDState, lam: float) -> dict:
    """Every SPEC §2–§3 quantity of the current state, from :func:`ncmse.measure_features`."""
    X, labels = model.flatten(state.H)
    C = state.H.shape[0]
    return measure_features(X, labels, state.W, state.b, num_classes=C, lam=lam).to_dict()


def _gradients(
    state: GDState, lam: float, lam_h: float
) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(J, ∇_W J, ∇_b J, ∇_H J)`` in closed form."""
    W, b, H = state.W, state.b, state.H
    C, n, _ = H.shape
    N = C * n
    target = torch.eye(C, dtype=H.dtype, device=H.device)[:, None, :]
    R = H @ W.T + b - target  # residuals (C, n, C)
    J = 0.5 * float((R**2).sum()) / N + 0.5 * lam * float((W**2).sum() + (b**2).sum())
    J += 0.5 * lam_h * float((H**2).sum()) / N
    Rf = R.reshape(N, C)
    gW = Rf.T @ H.reshape(N, -1) / N + lam * W
    gb = Rf.sum(dim=0) / N + lam * b
    gH = (R @ W + lam_h * H) / N
    return J, gW, gb, gH


def _curvature_hint(state: GDState, lam: float, lam_h: float, lr: float, lr_f: float) -> str:
    """Message naming the stable learning rates at the current state."""
    X, _ = model.flatten(state.H)
    N = X.shape[0]
    Xa = torch.cat([X, torch.ones(N, 1, dtype=X.dtype, device=X.device)], dim=1)
    curv_w = float(torch.linalg.eigvalsh(Xa.T @ Xa / N)[-1]) + lam
    curv_h = (float(torch.linalg.matrix_norm(state.W, ord=2)) ** 2 + lam_h) / N
    return (
        f"GD needs lr < 2/{curv_w:.3g} = {2 / curv_w:.3g} for (W, b) and lr_features < "
        f"2/{curv_h:.3g} = {2 / max(curv_h, 1e-300):.3g} for H at the initial point "
        f"(got lr={lr:g}, lr_features={lr_f:g}); reduce --lr"
    )


def run_gd(
    state: GDState,
    *,
    lam: float,
    lr: float,
    steps: int,
    lam_h: float = 0.0,
    lr_features: float | None = None,
    record_steps: np.ndarray | None = None,
    on_record: Callable[[int, GDState], None] | None = None,
    measure: bool = True,
) -> GDResult:
    """Run plain GD and record every SPEC §2–§3 quantity at ``record_steps``.

    Parameters
    ----------
    state : GDState
        Initial ``W`` (C, p), ``b`` (C,), ``H`` (C, n, p); not modified.
    lam, lam_h : float
        Ridge on the classifier ``(W, b)`` and feature penalty (module docstring), ``≥ 0``.
    lr : float
        Learning rate of ``(W, b)``.
    steps : int
        Number of GD steps.
    lr_features : float, optional
        Learning rate of ``H``; default ``N · lr``.
    record_steps : ndarray of int, optional
        Steps at which to measure (default: 0 and 60 log-spaced steps).
    on_record : callable(step, state), optional
        Called after each measurement.
    measure : bool
        If False, only ``{"step", "objective"}`` are recorded (fast, for benchmarks).

    Returns
    -------
    GDResult

    Raises
    ------
    DivergenceError
        The objective became non-finite or grew by more than ``DIVERGENCE_FACTOR``.
    """
    if lam < 0 or lam_h < 0 or not math.isfinite(lam) or not math.isfinite(lam_h):
        raise InputError(f"λ and λ_H must be finite and >= 0, got lam={lam}, lam_h={lam_h}")
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"the learning rate must be positive and finite, got lr={lr}")
    C, n, _ = state.H.shape
    lr_f = float(lr * C * n if lr_features is None else lr_features)
    if not (math.isfinite(lr_f) and lr_f > 0):
        raise InputError(f"lr_features must be positive and finite, got {lr_features}")
    rec = log_steps(steps, 60) if record_steps is None else np.asarray(record_steps, np.int64)
    cur = GDState(W=state.W.clone(), b=state.b.clone(), H=state.H.clone())
    records: list[dict] = []
    with small_problem_threads(cur.H):
        J0, *_ = _gradients(cur, lam, lam_h)
        rec_set = {int(s) for s in rec}
        for step in range(steps + 1):
            J, gW, gb, gH = _gradients(cur, lam, lam_h)
            if not math.isfinite(J) or J > DIVERGENCE_FACTOR * max(J0, 1.0):
                raise DivergenceError(
                    f"plain UFM GD diverged at step {step} (objective {J:.3g}, initially "
                    f"{J0:.3g}): the step size is too large. "
                    + _curvature_hint(state, lam, lam_h, lr, lr_f)
                )
            if step in rec_set:
                row = gd_metrics(cur, lam) if measure else {}
                row.update(step=step, objective=J)
                records.append(row)
                if on_record is not None:
                    on_record(step, cur)
            if step == steps:
                break
            cur.W -= lr * gW
            cur.b -= lr * gb
            cur.H -= lr_f * gH
    return GDResult(
        steps=np.asarray([r["step"] for r in records], dtype=np.int64),
        records=records,
        state=cur,
        lr=float(lr),
        lr_features=lr_f,
    )
