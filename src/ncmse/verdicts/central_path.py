"""Does a real network move along the central path after TPT? One time scale κ per law (SPEC §9).

The unconstrained features model predicts how the SNR singular values ω_j evolve on the central
path (SPEC §5.3, the paper's continually renormalised flow, and §5.4, step-then-renormalise);
:mod:`ncmse.ufm.closed_form` solves both laws ``c1 log ω + c2 ω² + c3 ω⁴ = a_j + t`` in
gradient-flow time t. SGD's flow time is learning rate × steps: τ(e) = Σ η_k over the optimiser
steps up to the end of epoch e (:mod:`ncmse.train.schedule`; the metrics column ``flow_time``). The
fit
allows one free time scale per law:

    ω_j(e) ≈ law.omega(κ · (τ(e) − τ(e0)), ω(e0))_j          for every measurement e ≥ e0,

where e0 is the epoch of the first measurement at or after the TPT epoch and ω(e0) the measured
ω there. κ > 0 minimises the squared error of ln ω over all j and all e > e0 (at e0 the
residual is zero by construction). n = training samples per class, C = classes.

Verdict: the law is followed (``follows: true``) when the rms residual of ln ω is ≤ 0.1 and at
most half the residual of ω held at their TPT values (κ = 0, ``rms_log_residual_frozen``);
false otherwise, with the reason read off the residuals (:func:`_diagnose`): ω that barely move,
a jump at the learning-rate drops (the law has no term for them), scatter, a systematic
departure, a spread ω_max/ω_min that does not close as the law says. ω that do not grow get no
fit (``kappa`` null) and ``follows: false``; no TPT, too few measurements or non-finite ω give
``follows: null``.

Search: each measured point with ω_j(e) above ω_j(e0) implies its own κ_ij = (F(ω_j(e)) −
F(ω_j(e0))) / (τ(e) − τ(e0)), F the law's invariant; a log-spaced grid spanning those (one
decade beyond each end) locates the minimum, which a bounded scalar minimisation on ln κ then
refines. Deterministic; no start value to choose.

Examples
--------
>>> import numpy as np
>>> from ncmse.ufm.closed_form import projected_law
>>> law = projected_law(100, 10)
>>> epochs = np.arange(10, 60, 5)
>>> tau = 0.1 * 10 * epochs  # lr 0.1, 10 steps per epoch
>>> omega = law.omega(250.0 * (tau - tau[0]), [0.5, 1.0, 2.0])
>>> fit = fit_law(law, epochs, tau, omega)
>>> round(fit["kappa"], 6), fit["points"], fit["rms_log_residual"] < 1e-9, fit["follows"]
(250.0, 27, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar

from ncmse.errors import NCMSEError
from ncmse.rundir.format import flag, number
from ncmse.train.schedule import flow_times, lr_drop_epochs, steps_per_epoch
from ncmse.ufm.closed_form import Law, law_for_flow
from ncmse.verdicts.claims import omega_of

__all__ = [
    "CLOCK",
    "CLOCK_RECONSTRUCTED",
    "CLOCK_RECORDED",
    "FOLLOWS_MAX_BASELINE_FRACTION",
    "FOLLOWS_MAX_RMS",
    "LAWS",
    "LAW_SHORT",
    "LAW_TITLES",
    "Clock",
    "clock_of",
    "describe_fit",
    "verdict_word",
    "fit_central_path",
    "fit_law",
    "fitted_omega",
    "is_current_fit",
    "omega_table",
]

#: the laws fitted, by their :func:`ncmse.ufm.closed_form.law_for_flow` names
LAWS: tuple[str, ...] = ("projected", "variant")
#: short names of the laws (figure titles, console)
LAW_SHORT: dict[str, str] = {"projected": "projected flow", "variant": "step-then-renormalise"}
#: human names of the laws (report tables)
LAW_TITLES: dict[str, str] = {
    "projected": "projected (continually renormalised) flow, SPEC §5.3",
    "variant": "step-then-renormalise, SPEC §5.4",
}
#: the fit's clock (record key ``clock``): flow time τ = Σ learning rate over optimiser steps
CLOCK = "lr_steps"
#: where τ came from (record key ``clock_source``)
CLOCK_RECORDED = "recorded by the run (metrics column flow_time)"
CLOCK_RECONSTRUCTED = "reconstructed from the config's learning-rate schedule"
#: ``follows`` needs rms ln-ω residual ≤ this ...
FOLLOWS_MAX_RMS = 0.1
#: ... and ≤ this fraction of the residual of ω held at their TPT values
FOLLOWS_MAX_BASELINE_FRACTION = 0.5

_GRID_POINTS = 161
_DECADE = math.log(10.0)
#: a difference of ln(ω_max/ω_min), or a residual autocorrelation, that the diagnosis reports
_RATIO_GAP = 0.1
_SCATTER_AUTOCORRELATION = 0.5
#: a step of the mean ln-ω residual across a drop is a jump when above both of these
_JUMP = 0.1
_JUMP_TYPICAL = 3.0

_KEYS = ("law", "n", "C", "e0", "clock", "kappa", "rms_log_residual", "rms_log_residual_frozen",
         "ratio_last_measured", "ratio_last_predicted", "points", "follows", "reason")  # fmt: skip


def omega_table(rows: Sequence[Mapping[str, Any]]) -> tuple[NDArray[np.float64], NDArray]:
    """Epochs, shape (T,), and ω_j of every training-split row, shape (T, k) (NaN where missing).

    Rows with fewer ω than the widest row are padded with NaN.
    """
    epochs = np.array([number(r.get("epoch")) for r in rows], dtype=np.float64)
    omegas = [omega_of(r) for r in rows]
    k = max((w.size for w in omegas), default=0)
    table = np.full((len(rows), k), np.nan)
    for i, w in enumerate(omegas):
        table[i, : w.size] = w
    return epochs, table


# --------------------------------------------------------------------------------------------
# the clock
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """Flow time of a run's rows and its learning-rate drops.

    Attributes
    ----------
    tau : ndarray, shape (T,), or None
        τ at every row (None: unknown, see ``reason``).
    source : str or None
        :data:`CLOCK_RECORDED` or :data:`CLOCK_RECONSTRUCTED`.
    drop_epochs : tuple of int
        Epochs m after which the learning rate changes (epoch m + 1 trains at the new rate).
    drop_tau : tuple of float
        τ(m) of those drops (where the rate changes on the τ axis).
    reason : str or None
        Why ``tau`` is None.
    """

    tau: NDArray[np.float64] | None
    source: str | None
    drop_epochs: tuple[int, ...] = ()
    drop_tau: tuple[float, ...] = ()
    reason: str | None = None


def clock_of(rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any] | None = None) -> Clock:
    """τ at every row: the recorded ``flow_time`` column, else reconstructed from ``config``.

    Parameters
    ----------
    rows : sequence of mapping
        Measurement rows in order of epoch.
    config : mapping, optional
        The run's config (``config.yaml``): learning-rate schedule and ``batch_size``; with the
        rows' ``num_samples`` it gives the steps per epoch, ⌈N / batch_size⌉ (the trainer's
        loader keeps the last partial batch). It also locates the learning-rate drops exactly;
        without it a drop is placed at the last measurement before the rows' ``lr`` changes.
    """
    epochs = np.array([number(r.get("epoch")) for r in rows], dtype=np.float64)
    recorded = np.array([number(r.get("flow_time")) for r in rows], dtype=np.float64)
    schedule: NDArray[np.float64] | None = None
    drops: list[int] = []
    problem = None
    if config is not None:
        try:
            drops = lr_drop_epochs(config)
            total = number(rows[-1].get("num_samples")) if rows else math.nan
            if math.isfinite(total) and total >= 1:
                schedule = flow_times(config, steps_per_epoch(int(total), _batch(config)))
            else:
                problem = "the rows lack num_samples (needed for the steps per epoch)"
        except NCMSEError as exc:
            problem = str(exc)
    if rows and np.all(np.isfinite(recorded)):
        tau, source = recorded, CLOCK_RECORDED
    elif schedule is not None and _epochs_fit(epochs, schedule.size - 1):
        tau, source = schedule[epochs.astype(int)], CLOCK_RECONSTRUCTED
    else:
        if config is None:
            why = "the rows have no flow_time and no config was given to reconstruct it"
        elif problem is not None:
            why = f"cannot reconstruct it from the config: {problem}"
        else:
            why = "the measurement epochs are not whole epochs of the config's schedule"
        return Clock(None, None, reason=f"no flow time: {why}")
    if config is None:
        lrs = np.array([number(r.get("lr")) for r in rows], dtype=np.float64)
        changed = np.nonzero(np.isfinite(lrs[:-1]) & (lrs[1:] != lrs[:-1]))[0]
        changed = changed[np.isfinite(lrs[changed + 1])]
        return Clock(tau, source, tuple(int(epochs[i]) for i in changed),
                     tuple(float(tau[i]) for i in changed))  # fmt: skip
    drop_tau = tuple(float(schedule[m]) for m in drops) if schedule is not None else ()
    return Clock(tau, source, tuple(drops), drop_tau)


def _batch(config: Mapping[str, Any]) -> int:
    from ncmse.train.config import Config  # lazy: the verdicts (and the report) load no torch

    value = number(config.get("batch_size", Config().batch_size))
    return int(value) if math.isfinite(value) else 0


def _epochs_fit(epochs: NDArray[np.float64], last: int) -> bool:
    return bool(
        epochs.size
        and np.all(np.isfinite(epochs))
        and np.all(epochs == np.round(epochs))
        and epochs.min() >= 0
        and epochs.max() <= last
    )


# --------------------------------------------------------------------------------------------
# the fit of one law
# --------------------------------------------------------------------------------------------


def _record(law: Law, n: float, c: float, e0: float | None, **values: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(_KEYS)
    record.update(law=law.name, n=_integral(n), C=int(round(c)), clock=CLOCK, points=0,
                  e0=None if e0 is None else _integral(e0))  # fmt: skip
    record.update(values)
    return record


def _ratio(omega: NDArray[np.float64]) -> float:
    return float(np.max(omega) / np.min(omega))


def fit_law(
    law: Law,
    epochs: ArrayLike,
    flow_time: ArrayLike,
    omega: ArrayLike,
    *,
    drop_epochs: Iterable[int] = (),
) -> dict[str, Any]:
    """Fit κ of one law to ω measured at ``epochs[0] = e0`` and after, on the flow-time clock.

    Parameters
    ----------
    law : Law
        From :func:`ncmse.ufm.closed_form.law_for_flow` (its n and C are those of the run).
    epochs : array_like, shape (T,)
        Increasing measurement epochs; the first is e0.
    flow_time : array_like, shape (T,)
        τ at those epochs (increasing); the law runs on κ · (τ − τ(e0)).
    omega : array_like, shape (T, k)
        Measured ω_j at those epochs.
    drop_epochs : iterable of int
        Epochs m after which the learning rate drops (for the diagnosis of a misfit).

    Returns
    -------
    dict
        ``{"law", "n", "C", "e0", "clock", "kappa", "rms_log_residual",
        "rms_log_residual_frozen", "ratio_last_measured", "ratio_last_predicted", "points",
        "follows", "reason"}``: ``points`` = k·(T − 1) fitted values (e > e0),
        ``rms_log_residual`` = root mean square of ln ω_measured − ln ω_fitted over them,
        ``rms_log_residual_frozen`` the same for ω held at ω(e0) (κ = 0), the ratios
        ω_max/ω_min at the last measurement, ``n``/``C`` from the law's coefficients
        (c2/c1 = 1/C). ``kappa`` is None with the ``reason`` when the data admit no fit.
    """
    e = np.asarray(epochs, dtype=np.float64).ravel()
    tau = np.asarray(flow_time, dtype=np.float64).ravel()
    w = np.asarray(omega, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    c = law.c1 / law.c2 if law.c3 > 0 else law.c1 / (2.0 * law.c2)
    n = law.c1 / (c * c)
    e0 = float(e[0]) if e.size else None
    if e.size < 3 or w.shape[0] != e.size or tau.size != e.size or w.shape[1] == 0:
        return _record(law, n, c, e0, reason="fewer than 2 measurements after the TPT epoch")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        bad = e[np.any(~np.isfinite(w) | (w <= 0), axis=1)]
        listed = ", ".join(f"{x:g}" for x in sorted(set(bad.tolist()))[:5])
        return _record(law, n, c, e0, reason="ω not finite and positive at epoch " + listed)
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        return _record(law, n, c, e0, reason="measurement epochs are not finite and increasing")
    if not np.all(np.isfinite(tau)) or np.any(np.diff(tau) <= 0):
        return _record(law, n, c, e0, reason="flow time is not finite and increasing")
    dt = tau[1:] - tau[0]
    w0 = w[0]
    target = np.log(w[1:])  # (T-1, k)
    change = target - np.log(w0)[None, :]
    base = {
        "points": int(change.size),
        "rms_log_residual_frozen": float(np.sqrt(np.mean(change**2))),
        "ratio_last_measured": _ratio(w[-1]),
    }
    if float(np.mean(change)) <= 0.0:
        reason = f"ω do not grow after TPT (mean change of ln ω = {float(np.mean(change)):.3g})"
        return _record(law, n, c, e0, reason=reason, follows=False, **base)
    log_kappa = _fit_log_kappa(law, dt, w0, target)
    if log_kappa is None:
        reason = "ω do not grow measurably: the best κ is at the lower end of the search range"
        return _record(law, n, c, e0, reason=reason, follows=False, **base)
    fitted = law.omega(math.exp(log_kappa) * dt, w0)
    residual = target - np.log(fitted)
    rms = float(np.sqrt(np.mean(residual**2)))
    rms0 = base["rms_log_residual_frozen"]
    follows = rms <= FOLLOWS_MAX_RMS and rms <= FOLLOWS_MAX_BASELINE_FRACTION * rms0
    record = _record(law, n, c, e0, kappa=math.exp(log_kappa), rms_log_residual=rms,
                     ratio_last_predicted=_ratio(fitted[-1]), follows=bool(follows),
                     **base)  # fmt: skip
    record["reason"] = (
        _agreement(rms, rms0)
        if follows
        else _diagnose(law, e, tau, w, fitted, residual, record, list(drop_epochs))
    )
    return record


def _sse(law: Law, log_kappa: float, dt: NDArray, w0: NDArray, target: NDArray) -> float:
    fitted = law.omega(math.exp(log_kappa) * dt, w0)
    return float(np.sum((target - np.log(fitted)) ** 2))


def _fit_log_kappa(
    law: Law, dt: NDArray[np.float64], w0: NDArray[np.float64], target: NDArray[np.float64]
) -> float | None:
    """ln κ minimising Σ (target − ln law.omega(κ·dt, w0))²; None when the best κ is the
    lower end of the search range (ω do not grow measurably).

    ``dt`` (T',), ``target`` (T', k) = ln ω measured; ``w0`` (k,).
    """
    implied = (law.invariant(np.exp(target)) - law.invariant(w0)[None, :]) / dt[:, None]
    implied = implied[implied > 0]
    if implied.size == 0:
        return None
    lo, hi = math.log(float(implied.min())) - _DECADE, math.log(float(implied.max())) + _DECADE
    grid = np.linspace(lo, hi, _GRID_POINTS)
    values = np.array([_sse(law, x, dt, w0, target) for x in grid])
    best = int(np.argmin(values))
    if best == 0:
        return None
    left, right = grid[best - 1], grid[min(best + 1, grid.size - 1)]
    res = minimize_scalar(lambda x: _sse(law, x, dt, w0, target), bounds=(left, right),
                          method="bounded", options={"xatol": 1e-12})  # fmt: skip
    return float(res.x) if float(res.fun) <= values[best] else float(grid[best])


def _factor(rms: float) -> str:
    return f"×{math.exp(rms):#.3g} (natural log {rms:.3g})"


def _agreement(rms: float, rms0: float) -> str:
    return (
        f"the law describes ω within a factor {_factor(rms)}, at most "
        f"{FOLLOWS_MAX_RMS:g} in ln ω and at most half of {_factor(rms0)} holding ω at their "
        "TPT values"
    )


def _diagnose(
    law: Law,
    epochs: NDArray[np.float64],
    tau: NDArray[np.float64],
    omega: NDArray[np.float64],
    fitted: NDArray[np.float64],
    residual: NDArray[np.float64],
    record: Mapping[str, Any],
    drop_epochs: list[int],
) -> str:
    """Why a fitted law is not followed, in words, read off the residuals.

    ``residual`` (T − 1, k) = ln ω − ln ω_fitted after e0; r_i its mean over j (r_0 = 0). In
    order: ω that barely move (rms ≤ 0.1 but not half the frozen baseline); a jump at the
    learning-rate drops (|r_b − r_{b−1}| across a drop above 0.1 and 3× the median step of r
    between other measurements; with the rms left by the law restarted from the measured ω after
    each drop); scatter (lag-1 autocorrelation of r below 0.5); else a systematic departure of
    the growth. Then, independently, a last ω_max/ω_min more than 10 % (in ln) from the law's.
    """
    rms = float(record["rms_log_residual"])
    rms0 = float(record["rms_log_residual_frozen"])
    reasons = []
    r = np.r_[0.0, residual.mean(axis=1)]  # signed mean residual per measurement, 0 at e0
    restarts = _restart_indices(epochs, drop_epochs)
    steps = np.abs(np.diff(r))  # steps[i - 1]: from measurement i − 1 to i
    quiet = np.delete(steps, [b - 1 for b in restarts])
    typical = float(np.median(quiet)) if quiet.size else 0.0
    jumps = [b for b in restarts if steps[b - 1] > max(_JUMP, _JUMP_TYPICAL * typical)]
    if rms <= FOLLOWS_MAX_RMS:
        reasons.append(
            f"ω barely change after TPT: holding them at their TPT values leaves "
            f"{_factor(rms0)}, so the fit cannot tell the law from no motion"
        )
    elif jumps:
        texts = []
        for b in jumps:
            measured = math.exp(float(np.mean(np.log(omega[b] / omega[b - 1]))))
            before = fitted[b - 2] if b >= 2 else omega[0]  # fitted[i - 1] is measurement i
            predicted = math.exp(float(np.mean(np.log(fitted[b - 1] / before))))
            texts.append(
                f"×{measured:#.3g} from epoch {epochs[b - 1]:g} to {epochs[b]:g} where the "
                f"fitted law gives ×{predicted:#.3g}"
            )
        restarted = _restarted_rms(law, tau, omega, restarts)
        after = ""
        if restarted is not None:
            still = "still " if restarted > FOLLOWS_MAX_RMS else ""
            after = (
                f"; restarted from the measured ω after each drop it {still}leaves "
                f"{_factor(restarted)}"
            )
        reasons.append(
            "ω jump at the learning-rate drops (" + "; ".join(texts) + "): the law has no term "
            "for them" + after
        )
    else:
        denominator = float(np.sum(r * r))
        rho = float(np.sum(r[1:] * r[:-1]) / denominator) if denominator > 0 else 0.0
        if rho < _SCATTER_AUTOCORRELATION:
            reasons.append(
                f"ω scatter about the law from one measurement to the next by {_factor(rms)} "
                "(no systematic departure)"
            )
        else:
            grown = math.exp(float(np.mean(np.log(omega[-1] / omega[0]))))
            predicted = math.exp(float(np.mean(np.log(fitted[-1] / omega[0]))))
            reasons.append(
                f"ω depart systematically from the law's time course (from epoch "
                f"{epochs[0]:g} to {epochs[-1]:g} they grow ×{grown:#.3g}, the fitted law "
                f"×{predicted:#.3g})"
            )
    measured_ratio = float(record["ratio_last_measured"])
    predicted_ratio = float(record["ratio_last_predicted"])
    gap = math.log(measured_ratio) - math.log(predicted_ratio)
    if abs(gap) > _RATIO_GAP:
        how = "does not close as the law says" if gap > 0 else "closes faster than the law says"
        reasons.append(
            f"the spread ω_max/ω_min {how}: {measured_ratio:#.3g} at the last measurement, "
            f"the law predicts {predicted_ratio:#.3g}"
        )
    return "; ".join(reasons)


def _restart_indices(epochs: NDArray[np.float64], drop_epochs: list[int]) -> list[int]:
    """Indices b ≥ 1 of the first measurement after each drop m with e_{b−1} ≤ m < e_b."""
    found = set()
    for m in drop_epochs:
        after = np.nonzero(epochs > m)[0]
        if after.size and after[0] >= 1:
            found.add(int(after[0]))
    return sorted(found)


def _restarted_rms(
    law: Law, tau: NDArray[np.float64], omega: NDArray[np.float64], restarts: list[int]
) -> float | None:
    """rms ln-ω residual of one κ with the law restarted from the measured ω at each index in
    ``restarts`` (the first measurement after a drop); None when nothing is left to fit."""
    starts = [0, *restarts]
    index = np.arange(tau.size)
    segment = np.searchsorted(np.asarray(starts), index, side="right") - 1
    keep = np.array([i not in starts for i in index])
    if not keep.any():
        return None
    origin = np.asarray(starts)[segment[keep]]
    dt = tau[keep] - tau[origin]
    target = np.log(omega[keep])

    def sse(log_kappa: float) -> float:
        kappa = math.exp(log_kappa)
        total = 0.0
        for s in starts:
            mine = origin == s
            if mine.any():
                pred = law.omega(kappa * dt[mine], omega[s])
                total += float(np.sum((target[mine] - np.log(pred)) ** 2))
        return total

    points = target.size
    implied = (law.invariant(omega[keep]) - law.invariant(omega[origin])) / dt[:, None]
    implied = implied[implied > 0]
    if implied.size == 0:
        return math.sqrt(sse(-745.0) / points)
    lo, hi = math.log(float(implied.min())) - _DECADE, math.log(float(implied.max())) + _DECADE
    grid = np.linspace(lo, hi, _GRID_POINTS // 2)
    values = np.array([sse(x) for x in grid])
    best = int(np.argmin(values))
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    res = minimize_scalar(sse, bounds=(left, right), method="bounded")
    return math.sqrt(min(float(res.fun), float(values[best])) / points)


def fit_central_path(
    rows: Sequence[Mapping[str, Any]],
    *,
    tpt_epoch: float | None,
    config: Mapping[str, Any] | None = None,
    n: float | None = None,
    num_classes: int | None = None,
    laws: Iterable[str] = LAWS,
) -> list[dict[str, Any]]:
    """SPEC §9 fit of every law to the training-split rows of one run, on the flow-time clock.

    Parameters
    ----------
    rows : sequence of mapping
        Measurement rows (metrics.jsonl / metrics.csv), in order of epoch.
    tpt_epoch : float or None
        The run's TPT epoch (summary.json ``tpt_epoch``;
        :func:`ncmse.verdicts.claims.tpt_epoch_of`).
    config : mapping, optional
        The run's config: locates the learning-rate drops, and gives τ when the rows have no
        ``flow_time`` (:func:`clock_of`).
    n, num_classes : optional
        Training samples per class and C; default from the last row's ``num_samples`` and
        ``num_classes`` (n = N / C). The laws assume balanced classes: an imbalanced set is fitted
        with the mean n, and its reason says so.
    laws : iterable of str
        Laws to fit (default both).

    Returns
    -------
    list of dict
        One record per law (:func:`fit_law`), plus ``clock_source`` (where τ came from).
    """
    rows = list(rows)
    laws = tuple(laws)
    if rows:
        ref = rows[-1]
        num_classes = num_classes or _int_or_none(ref.get("num_classes"))
        if n is None:
            total = number(ref.get("num_samples"))
            n = total / num_classes if num_classes and math.isfinite(total) else None
    balanced = flag(rows[-1].get("balanced")) if rows else None
    if not num_classes or num_classes < 2 or not n or n <= 0:
        reason = "unknown n (samples per class) or C: rows lack num_samples/num_classes"
        return [
            dict(dict.fromkeys(_KEYS), law=name, n=n, C=num_classes, clock=CLOCK, points=0,
                 reason=reason, clock_source=None)
            for name in laws
        ]  # fmt: skip
    epochs, omega = omega_table(rows)
    clock = clock_of(rows, config)
    start, reason = None, clock.reason
    if tpt_epoch is None:
        reason = "no TPT: training error never reached zero"
    elif clock.tau is not None:
        after = np.nonzero(epochs >= float(tpt_epoch))[0]
        if after.size == 0:
            reason = f"no measurement at or after the TPT epoch {tpt_epoch:g}"
        else:
            start = int(after[0])
    out = []
    for name in laws:
        law = law_for_flow(name, n, num_classes)
        if start is None or clock.tau is None:
            record = _record(law, n, num_classes, None, reason=reason)
        else:
            record = fit_law(law, epochs[start:], clock.tau[start:], omega[start:],
                             drop_epochs=clock.drop_epochs)  # fmt: skip
            if balanced is False and record["reason"]:
                record["reason"] += (
                    " (classes are not balanced: the law is fitted with the mean n per class)"
                )
        record["clock_source"] = clock.source
        out.append(record)
    return out


def is_current_fit(records: Any) -> bool:
    """Whether stored ``central_path_fit`` records are this version's (flow-time clock); older
    ones (fitted on epochs) are stale and a reader refits them."""
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, Mapping) and r.get("clock") == CLOCK for r in records)
    )


def fitted_omega(record: Mapping[str, Any], elapsed: ArrayLike, omega0: ArrayLike) -> NDArray:
    """ω_j of a fitted record after flow time ``elapsed`` = τ − τ(e0) ≥ 0, started from
    ``omega0`` (the measured ω at e0); shape (T, k)."""
    if record.get("kappa") is None:
        raise ValueError(f"law {record.get('law')!r} has no fit: {record.get('reason')}")
    law = law_for_flow(str(record["law"]), record["n"], int(record["C"]))
    t = float(record["kappa"]) * np.asarray(elapsed, dtype=np.float64)
    return law.omega(np.maximum(t, 0.0), omega0)


def verdict_word(record: Mapping[str, Any]) -> str:
    """``"follows"``, ``"does not follow"`` or ``"no verdict"`` (``follows`` true/false/null)."""
    follows = record.get("follows")
    if follows is True:
        return "follows"
    return "does not follow" if follows is False else "no verdict"


def describe_fit(record: Mapping[str, Any]) -> str:
    """One line in words: the verdict, κ, the residual as a factor and the κ = 0 baseline.

    >>> describe_fit({"law": "projected", "kappa": 2.5e4, "rms_log_residual": 0.78,
    ...               "rms_log_residual_frozen": 2.04, "follows": False,
    ...               "reason": "ω jump at the learning-rate drops"})
    'central path (projected flow law): does not follow — κ = 2.5e+04, rms residual ×2.18 \
(natural log 0.78) vs ×7.69 holding ω at their TPT values; ω jump at the learning-rate drops'
    """
    name = LAW_SHORT.get(str(record.get("law")), str(record.get("law")))
    head = f"central path ({name} law): "
    rms, rms0 = record.get("rms_log_residual"), record.get("rms_log_residual_frozen")
    if record.get("kappa") is None or rms is None:
        verdict = "does not follow" if record.get("follows") is False else "no fit"
        return f"{head}{verdict} — {record.get('reason')}"
    text = (
        f"{head}{verdict_word(record)} — κ = {float(record['kappa']):.3g}, rms residual "
        f"×{math.exp(float(rms)):#.3g} (natural log {float(rms):.3g})"
    )
    if rms0 is not None:
        text += f" vs ×{math.exp(float(rms0)):#.3g} holding ω at their TPT values"
    if record.get("follows") is False and record.get("reason"):
        text += f"; {record['reason']}"
    return text


def _integral(x: float) -> float | int:
    """``x`` as an int when it is one (up to rounding of the law's coefficients)."""
    return int(round(x)) if abs(x - round(x)) <= 1e-9 * max(1.0, abs(x)) else float(x)


def _int_or_none(value: Any) -> int | None:
    x = number(value)
    return int(x) if math.isfinite(x) and x > 0 else None
