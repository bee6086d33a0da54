"""Feature flows of the UFM with the classifier eliminated (SPEC §5.2–§5.4), float64.

Three flows, all in the time ``t`` of ``dH/dt = −∇_H L_LS`` (see :mod:`ncmse.ufm.closed_form`):

``"central"``
    Gradient flow of ``L_LS(H)`` in raw coordinates (SPEC §5.2 gradient at ``λ = 0``; the
    envelope-theorem gradient when ``λ > 0``).  No renormalisation: Σ_W shrinks.
``"projected"``
    The paper's continually renormalised flow: the gradient projected onto the tangent space
    of ``{Σ_W = I}`` (SPEC §5.3), then a retraction ``h ← Σ_W^{-1/2} h``.
``"variant"``
    Step-then-renormalise: the full Euclidean gradient step, then the same retraction
    (SPEC §5.4).  Its continuous limit has velocity ``V = −G + ½ H D`` with
    ``D = (1/N) Σ (g_z z^T + z g_z^T)`` (the derivative of the re-whitening).

Integrators: ``"euler"`` is the literal scheme ``H ← R(H − dt · step_direction)``;
``"heun"`` is the second-order predictor–corrector on the limiting velocity with the same
retraction ``R``.  Step sizes are fixed (``dt``) or adaptive (``rel_step``): the latter takes
``dt = rel_step / r`` with ``r = max(‖Ṁ‖₂ / σ_min(M̄), ‖Ż‖_F / ‖Z‖_F)``, a bound on the
relative change of every singular value and of the within-class deviations per unit time.
A fixed step for which ``dt · r > MAX_RELATIVE_CHANGE`` is rejected as divergent.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ncmse.errors import DivergenceError, InputError, SingularCovarianceError
from ncmse.ufm import model
from ncmse.ufm.config import FLOWS, METHODS

__all__ = [
    "FLOWS",
    "MAX_RELATIVE_CHANGE",
    "METHODS",
    "Recorder",
    "FlowResult",
    "velocity",
    "step_direction",
    "relative_rate",
    "simulate_flow",
    "log_times",
    "small_problem_threads",
]

#: the largest relative change of M̄ or Z a fixed step may make before it counts as divergent
MAX_RELATIVE_CHANGE = 0.5

Recorder = Callable[[float, torch.Tensor], None]


@dataclass
class FlowResult:
    """Trajectory of a flow at the record times.

    Attributes
    ----------
    flow, method : str
    times : ndarray, shape (R,)
    omega : ndarray, shape (R, C-1)
        SNR singular values, descending.
    left_vectors : ndarray, shape (R, p, C-1)
        Left singular vectors of ``Σ_W^{-1/2} M̄`` (sign-fixed so that the largest entry of
        each column is positive).
    right_vectors : ndarray, shape (R, C, C-1)
    num_steps : int
    dt_min, dt_max : float
        Smallest and largest step actually taken (record times shorten some steps).
    step_rule : str
        Human-readable statement of the step size, e.g. ``"adaptive rel_step=1e-3"``.
    features : Tensor, shape (C, n, p)
        The final features.
    stopped : str or None
        With ``stop_on_collapse``: why the flow ended before the last record time (``times``
        then holds only the times reached); None when it reached them all.
    """

    flow: str
    method: str
    times: np.ndarray
    omega: np.ndarray
    left_vectors: np.ndarray
    right_vectors: np.ndarray
    num_steps: int
    dt_min: float
    dt_max: float
    step_rule: str
    features: torch.Tensor = field(repr=False)
    stopped: str | None = None


def log_times(t_end: float, num: int, t_start: float = 1e-2) -> np.ndarray:
    """``0`` followed by ``num`` log-spaced times from ``min(t_start, t_end)`` to ``t_end``."""
    if not (math.isfinite(t_end) and t_end > 0):
        raise InputError(f"t_end must be a positive finite time, got {t_end}")
    if num < 1:
        raise InputError(f"the number of record times must be >= 1, got {num}")
    start = min(t_start, t_end)
    return np.concatenate([[0.0], np.geomspace(start, t_end, num)])


def _class_mean_and_dev(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = V.mean(dim=1, keepdim=True)
    return mean, V - mean


def step_direction(H: torch.Tensor, flow: str, lam: float = 0.0) -> torch.Tensor:
    """The (negative) gradient the literal Euler scheme steps along; shape (C, n, p)."""
    if flow == "projected":
        return -model.projected_grad(H)
    if flow == "variant":
        return -model.grad_ls_spec(H)
    if flow == "central":
        return -(model.grad_ls_spec(H) if lam == 0.0 else model.grad_ls_envelope(H, lam))
    raise InputError(f"unknown flow {flow!r}; choose one of {FLOWS}")


def velocity(
    H: torch.Tensor, flow: str, lam: float = 0.0, direction: torch.Tensor | None = None
) -> torch.Tensor:
    """Velocity ``dH/dt`` of the continuous flow at ``H``; shape (C, n, p).

    For ``"variant"`` this adds the derivative of the re-whitening, ``½ H D`` with
    ``D = (1/N) Σ (g_z z^T + z g_z^T)`` where ``g_z`` is the within-class-centred gradient.
    ``direction`` may pass a precomputed :func:`step_direction` at ``H``.
    """
    V = step_direction(H, flow, lam) if direction is None else direction
    if flow != "variant":
        return V
    C, n, p = H.shape
    _, Vz = _class_mean_and_dev(V)
    _, Z = _class_mean_and_dev(H)
    cross = Vz.reshape(C * n, p).T @ Z.reshape(C * n, p) / (C * n)
    D = -(cross + cross.T)  # dΣ_W/dt = −D along the step
    return V + 0.5 * H @ D


def relative_rate(H: torch.Tensor, V: torch.Tensor) -> float:
    """``max(‖Ṁ‖₂ / σ_min(M̄), ‖Ż‖_F / ‖Z‖_F)`` for velocity ``V`` at ``H`` (per unit time)."""
    Mbar = model.centred_means(H)
    Mdot = model.centred_means(V)
    C = H.shape[0]
    sig = torch.linalg.svdvals(Mbar)[: C - 1]
    rate_m = float(torch.linalg.matrix_norm(Mdot, ord=2)) / max(float(sig[-1]), 1e-300)
    _, Z = _class_mean_and_dev(H)
    _, Zdot = _class_mean_and_dev(V)
    rate_z = float(Zdot.norm()) / max(float(Z.norm()), 1e-300)
    return max(rate_m, rate_z)


@contextlib.contextmanager
def small_problem_threads(H: torch.Tensor) -> Iterator[None]:
    """Run small CPU problems on one intra-op thread (restored afterwards).

    The flows do thousands of tiny (p×p, C×C) linear-algebra calls per second; on a shared
    CPU, thread hand-offs cost more than the arithmetic (measured ~30× slower).
    """
    if H.device.type != "cpu" or H.numel() > 1_000_000:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _retract(H: torch.Tensor, flow: str) -> torch.Tensor:
    return H if flow == "central" else model.whiten(H)


def _sign_fix(U: torch.Tensor) -> torch.Tensor:
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs


def _check_finite(H: torch.Tensor, t: float, dt: float, flow: str) -> None:
    if not bool(torch.isfinite(H).all()):
        raise DivergenceError(
            f"the {flow} flow produced NaN/Inf at t = {t:.6g} with step dt = {dt:.3g}: the step "
            "size diverges; use a smaller --dt or the adaptive --rel-step"
        )


def _validate(flow: str, method: str, dt: float | None, rel_step: float | None) -> str:
    if flow not in FLOWS:
        raise InputError(f"unknown flow {flow!r}; choose one of {FLOWS}")
    if method not in METHODS:
        raise InputError(f"unknown integrator {method!r}; choose one of {METHODS}")
    if (dt is None) == (rel_step is None):
        raise InputError("give exactly one of dt (fixed step) and rel_step (adaptive step)")
    if dt is not None:
        if not (math.isfinite(dt) and dt > 0):
            raise InputError(f"the step size dt must be positive and finite, got {dt}")
        return f"fixed dt={dt:g} ({method})"
    assert rel_step is not None
    if not (math.isfinite(rel_step) and 0 < rel_step <= MAX_RELATIVE_CHANGE):
        raise InputError(
            f"rel_step must be in (0, {MAX_RELATIVE_CHANGE}], got {rel_step}; it is the largest "
            "relative change of a singular value per step, e.g. 1e-3"
        )
    return f"adaptive rel_step={rel_step:g} ({method})"


def simulate_flow(
    H0: torch.Tensor,
    *,
    flow: str = "projected",
    times: np.ndarray,
    dt: float | None = None,
    rel_step: float | None = None,
    method: str = "heun",
    lam: float = 0.0,
    on_record: Recorder | None = None,
    max_steps: int = 10_000_000,
    stop_on_collapse: bool = False,
) -> FlowResult:
    """Integrate a flow from ``H0`` and record at ``times``.

    Parameters
    ----------
    H0 : Tensor, shape (C, n, p)
        Initial features (float64 recommended; renormalised flows whiten them first).
    flow : {"projected", "variant", "central"}
    times : ndarray, shape (R,)
        Increasing record times starting at 0; steps are shortened to hit them exactly.
    dt, rel_step : float, optional
        Exactly one: a fixed step, or the adaptive relative step (module docstring).
    method : {"euler", "heun"}
    lam : float
        Ridge λ of the central flow (ignored by the renormalised flows, which are at λ = 0).
    on_record : callable(t, H), optional
        Called at every record time with the current features.
    max_steps : int
        Safety cap on the number of steps.
    stop_on_collapse : bool
        Central flow: end the simulation at the last record time reached when Σ_W becomes
        numerically singular (the within-class variability has collapsed, NC1, and the flow is
        undefined beyond), instead of raising; :attr:`FlowResult.stopped` says so.

    Returns
    -------
    FlowResult

    Raises
    ------
    DivergenceError
        NaN/Inf, or a fixed step that changes ``M̄`` or ``Z`` by more than
        ``MAX_RELATIVE_CHANGE`` relative in one step.
    SingularCovarianceError
        Σ_W lost rank (central flow) or cannot be whitened.
    """
    rule = _validate(flow, method, dt, rel_step)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or times[0] != 0.0 or np.any(np.diff(times) <= 0):
        raise InputError("times must be a strictly increasing 1-D array starting at 0")
    if lam != 0.0 and flow != "central":
        raise InputError(f"lam > 0 is only supported by the central flow, not {flow!r}")
    scheme = _Scheme(flow, method, dt, rel_step, lam, max_steps, rule)
    with small_problem_threads(H0):
        return _integrate(
            H0, scheme, times, on_record, stop_on_collapse=stop_on_collapse and flow == "central"
        )


@dataclass(frozen=True)
class _Scheme:
    """How :func:`simulate_flow` integrates (its arguments, validated)."""

    flow: str
    method: str
    dt: float | None
    rel_step: float | None
    lam: float
    max_steps: int
    #: the step rule in words (:attr:`FlowResult.step_rule`)
    rule: str


def _integrate(
    H0: torch.Tensor,
    scheme: _Scheme,
    times: np.ndarray,
    on_record: Recorder | None,
    stop_on_collapse: bool = False,
) -> FlowResult:
    """The integration loop of :func:`simulate_flow`."""
    flow = scheme.flow
    H = _retract(H0.to(torch.float64), flow)
    records: dict[str, list] = {"omega": [], "U": [], "V": []}

    def record(t: float, H: torch.Tensor) -> None:
        U, omega, V = model.snr_svd(H)
        if on_record is not None:
            on_record(t, H)
        records["omega"].append(omega.cpu().numpy())
        records["U"].append(_sign_fix(U).cpu().numpy())
        records["V"].append(_sign_fix(V).cpu().numpy())

    record(0.0, H)
    t, k, steps = 0.0, 1, 0
    dt_min, dt_max = math.inf, 0.0
    stopped, recorded_H = None, H
    while k < times.size:
        try:
            H, t, k, steps, dt_min, dt_max = _advance(
                H, t, k, steps, dt_min, dt_max, scheme, times, record
            )
        except SingularCovarianceError as exc:
            if not stop_on_collapse or k < 2:
                raise
            stopped = (
                f"Σ_W became numerically singular after t = {times[k - 1]:.6g}: the "
                f"within-class variability collapsed and the flow is undefined beyond ({exc})"
            )
            times, H = times[:k], recorded_H
            break
        recorded_H = H
    return FlowResult(
        flow=flow,
        method=scheme.method,
        times=times.copy(),
        omega=np.stack(records["omega"]),
        left_vectors=np.stack(records["U"]),
        right_vectors=np.stack(records["V"]),
        num_steps=steps,
        dt_min=dt_min if steps else 0.0,
        dt_max=dt_max,
        step_rule=scheme.rule,
        features=H,
        stopped=stopped,
    )


def _advance(
    H: torch.Tensor,
    t: float,
    k: int,
    steps: int,
    dt_min: float,
    dt_max: float,
    scheme: _Scheme,
    times: np.ndarray,
    record: Callable[[float, torch.Tensor], None],
) -> tuple[torch.Tensor, float, int, int, float, float]:
    """Step until the next record time ``times[k]`` and record there."""
    flow, dt, lam, max_steps = scheme.flow, scheme.dt, scheme.lam, scheme.max_steps
    while True:
        direction = step_direction(H, flow, lam)
        V = velocity(H, flow, lam, direction)
        rate = relative_rate(H, V)
        if dt is not None:
            if dt * rate > MAX_RELATIVE_CHANGE:
                raise DivergenceError(
                    f"step dt = {dt:g} is too large for the {flow} flow at t = {t:.6g}: one "
                    f"step would change M̄ or the within-class deviations by {dt * rate:.3g} "
                    f"(relative; limit {MAX_RELATIVE_CHANGE}), so the scheme diverges or is "
                    f"meaningless; use dt <= {0.1 / rate:.3g} or the adaptive rel_step"
                )
            h = dt
        else:
            h = scheme.rel_step / max(rate, 1e-300)  # type: ignore[operator]
        h = min(h, times[k] - t)
        if scheme.method == "euler":
            H = _retract(H + h * direction, flow)
        else:
            H1 = _retract(H + h * V, flow)
            H = _retract(H + 0.5 * h * (V + velocity(H1, flow, lam)), flow)
        _check_finite(H, t, h, flow)
        t += h
        steps += 1
        dt_min, dt_max = min(dt_min, h), max(dt_max, h)
        if steps >= max_steps and t < times[k] * (1.0 - 1e-13):
            raise DivergenceError(
                f"the {flow} flow needed more than max_steps = {max_steps} steps to reach "
                f"t = {times[-1]:g} (now t = {t:.6g}); use a larger step or fewer/shorter times"
            )
        if t >= times[k] * (1.0 - 1e-13):
            t = float(times[k])
            record(t, H)
            return H, t, k + 1, steps, dt_min, dt_max
