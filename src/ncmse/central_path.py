"""Does a real network move along the central path after TPT? One time scale κ per law (SPEC §9).

The unconstrained features model predicts how the SNR singular values ω_j evolve on the central
path (SPEC §5.3, the paper's continually renormalised flow, and §5.4, step-then-renormalise);
:mod:`ncmse.ufm.closed_form` solves both laws ``c1 log ω + c2 ω² + c3 ω⁴ = a_j + t``. A network is
not a flow in the UFM's time, so the fit allows one free time scale per law:

    ω_j(e) ≈ law.omega(κ · (e − e0), ω(e0))_j          for every measurement e ≥ e0,

where e0 is the epoch of the first measurement at or after the TPT epoch and ω(e0) the measured
ω there. κ > 0 (flow time per epoch) minimises the squared error of log ω over all j and all
e > e0 (at e0 the residual is zero by construction). n = training samples per class, C = classes.

Search: each measured point with ω_j(e) above ω_j(e0) implies its own κ_ij = (F(ω_j(e)) −
F(ω_j(e0))) / (e − e0), F the law's invariant; a log-spaced grid spanning those (one decade
beyond each end) locates the minimum, which a bounded scalar minimisation on log κ then refines.
Deterministic; no start value to choose.

No fit (``kappa`` null, with the ``reason``) when there is no TPT, fewer than two measurements
after e0, a non-finite or non-positive ω from e0 on, or ω that do not grow (the mean change of
log ω after e0 is ≤ 0, or the best κ sits at the lower end of the search range).

A learning-rate drop changes the time scale of SGD; one κ over a run that crosses a drop fits an
average, and the residual shows how well one time scale does.

Examples
--------
>>> import numpy as np
>>> from ncmse.ufm.closed_form import projected_law
>>> law = projected_law(100, 10)
>>> epochs = np.arange(10, 60, 5)
>>> omega = law.omega(250.0 * (epochs - 10), [0.5, 1.0, 2.0])
>>> fit = fit_law(law, epochs, omega)
>>> round(fit["kappa"], 6), fit["points"], fit["rms_log_residual"] < 1e-9
(250.0, 27, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar

from ncmse.claims import omega_of
from ncmse.ufm.closed_form import Law, law_for_flow

__all__ = [
    "LAWS",
    "LAW_SHORT",
    "LAW_TITLES",
    "fit_central_path",
    "fit_law",
    "fitted_omega",
    "omega_table",
]

#: the laws fitted, by their :func:`ncmse.ufm.closed_form.law_for_flow` names
LAWS: tuple[str, ...] = ("projected", "variant")
#: short names of the laws (figure titles)
LAW_SHORT: dict[str, str] = {"projected": "projected flow", "variant": "step-then-renormalise"}
#: human names of the laws (report tables)
LAW_TITLES: dict[str, str] = {
    "projected": "projected (continually renormalised) flow, SPEC §5.3",
    "variant": "step-then-renormalise, SPEC §5.4",
}

_GRID_POINTS = 161
_DECADE = math.log(10.0)


def omega_table(rows: Sequence[Mapping[str, Any]]) -> tuple[NDArray[np.float64], NDArray]:
    """Epochs, shape (T,), and ω_j of every training-split row, shape (T, k) (NaN where missing).

    Rows with fewer ω than the widest row are padded with NaN.
    """
    epochs = np.array([_float(r.get("epoch")) for r in rows], dtype=np.float64)
    omegas = [omega_of(r) for r in rows]
    k = max((w.size for w in omegas), default=0)
    table = np.full((len(rows), k), np.nan)
    for i, w in enumerate(omegas):
        table[i, : w.size] = w
    return epochs, table


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _record(law: Law, n: float, c: float, e0: float | None, **values: Any) -> dict[str, Any]:
    record = {
        "law": law.name,
        "n": _integral(n),
        "C": int(round(c)),
        "e0": None if e0 is None else _integral(e0),
        "kappa": None,
        "rms_log_residual": None,
        "points": 0,
        "rms_log_residual_kappa0": None,
        "reason": None,
    }
    record.update(values)
    return record


def fit_law(law: Law, epochs: ArrayLike, omega: ArrayLike) -> dict[str, Any]:
    """Fit κ of one law to ω measured at ``epochs[0] = e0`` and after.

    Parameters
    ----------
    law : Law
        From :func:`ncmse.ufm.closed_form.law_for_flow` (its n and C are those of the run).
    epochs : array_like, shape (T,)
        Increasing measurement epochs; the first is e0.
    omega : array_like, shape (T, k)
        Measured ω_j at those epochs.

    Returns
    -------
    dict
        ``{"law", "n", "C", "e0", "kappa", "rms_log_residual", "points",
        "rms_log_residual_kappa0", "reason"}``: ``points`` = k·(T − 1) fitted values (e > e0),
        ``rms_log_residual`` = root mean square of log ω_measured − log ω_fitted over them,
        ``rms_log_residual_kappa0`` the same for ω frozen at ω(e0) (what κ explains), ``n``/``C``
        from the law's coefficients (c2/c1 = 1/C). ``kappa`` is None with the ``reason`` when the
        data admit no fit.
    """
    e = np.asarray(epochs, dtype=np.float64).ravel()
    w = np.asarray(omega, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    c = law.c1 / law.c2 if law.c3 > 0 else law.c1 / (2.0 * law.c2)
    n = law.c1 / (c * c)
    e0 = float(e[0]) if e.size else None
    if e.size < 3 or w.shape[0] != e.size or w.shape[1] == 0:
        return _record(law, n, c, e0, reason="fewer than 2 measurements after the TPT epoch")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        bad = sorted({f"{x:g}" for x in e[np.any(~np.isfinite(w) | (w <= 0), axis=1)]})
        return _record(
            law, n, c, e0, reason="ω not finite and positive at epoch " + ", ".join(bad[:5])
        )
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        return _record(law, n, c, e0, reason="measurement epochs are not finite and increasing")
    dt = e[1:] - e[0]
    w0 = w[0]
    target = np.log(w[1:])  # (T-1, k)
    change = target - np.log(w0)[None, :]
    points = int(change.size)
    rms0 = float(np.sqrt(np.mean(change**2)))
    base = {"points": points, "rms_log_residual_kappa0": rms0}
    if float(np.mean(change)) <= 0.0:
        reason = f"ω do not grow after TPT (mean change of log ω = {float(np.mean(change)):.3g})"
        return _record(law, n, c, e0, reason=reason, **base)
    implied = (law.invariant(w[1:]) - law.invariant(w0)[None, :]) / dt[:, None]
    implied = implied[implied > 0]
    lo, hi = math.log(float(implied.min())) - _DECADE, math.log(float(implied.max())) + _DECADE

    def sse(log_kappa: float) -> float:
        fitted = law.omega(math.exp(log_kappa) * dt, w0)
        return float(np.sum((target - np.log(fitted)) ** 2))

    grid = np.linspace(lo, hi, _GRID_POINTS)
    values = np.array([sse(x) for x in grid])
    best = int(np.argmin(values))
    if best == 0:
        reason = "ω do not grow measurably: the best κ is at the lower end of the search range"
        return _record(law, n, c, e0, reason=reason, **base)
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    res = minimize_scalar(sse, bounds=(left, right), method="bounded",
                          options={"xatol": 1e-12})  # fmt: skip
    log_kappa = float(res.x) if float(res.fun) <= values[best] else float(grid[best])
    kappa = math.exp(log_kappa)
    rms = math.sqrt(sse(log_kappa) / points)
    return _record(law, n, c, e0, kappa=kappa, rms_log_residual=rms, **base)


def fit_central_path(
    rows: Sequence[Mapping[str, Any]],
    *,
    tpt_epoch: float | None,
    n: float | None = None,
    num_classes: int | None = None,
    laws: Iterable[str] = LAWS,
) -> list[dict[str, Any]]:
    """SPEC §9 fit of every law to the training-split rows of one run.

    Parameters
    ----------
    rows : sequence of mapping
        Measurement rows (metrics.jsonl / metrics.csv), in order of epoch.
    tpt_epoch : float or None
        The run's TPT epoch (summary.json ``tpt_epoch``; :func:`ncmse.claims.tpt_epoch_of`).
    n, num_classes : optional
        Training samples per class and C; default from the last row's ``num_samples`` and
        ``num_classes`` (n = N / C). The laws assume balanced classes: an imbalanced set is fitted
        with the mean n, and its record says ``"balanced": false``.
    laws : iterable of str
        Laws to fit (default both).

    Returns
    -------
    list of dict
        One record per law (see :func:`fit_law`), plus ``"balanced"`` when the rows say.
    """
    rows = list(rows)
    laws = tuple(laws)
    if rows:
        ref = rows[-1]
        num_classes = num_classes or _int_or_none(ref.get("num_classes"))
        if n is None:
            total = _float(ref.get("num_samples"))
            n = total / num_classes if num_classes and math.isfinite(total) else None
    balanced = rows[-1].get("balanced") if rows else None
    if not num_classes or num_classes < 2 or not n or n <= 0:
        reason = "unknown n (samples per class) or C: rows lack num_samples/num_classes"
        return [
            {"law": name, "n": n, "C": num_classes, "e0": None, "kappa": None,
             "rms_log_residual": None, "points": 0, "rms_log_residual_kappa0": None,
             "reason": reason}
            for name in laws
        ]  # fmt: skip
    epochs, omega = omega_table(rows)
    start, reason = None, None
    if tpt_epoch is None:
        reason = "no TPT: training error never reached zero"
    else:
        after = np.nonzero(epochs >= float(tpt_epoch))[0]
        if after.size == 0:
            reason = f"no measurement at or after the TPT epoch {tpt_epoch:g}"
        else:
            start = int(after[0])
    out = []
    for name in laws:
        law = law_for_flow(name, n, num_classes)
        if start is None:
            record = _record(law, n, num_classes, None, reason=reason)
        else:
            record = fit_law(law, epochs[start:], omega[start:])
        if _flag(balanced) is not None:
            record["balanced"] = _flag(balanced)
        out.append(record)
    return out


def fitted_omega(record: Mapping[str, Any], epochs: ArrayLike, omega0: ArrayLike) -> NDArray:
    """ω_j(e) of a fitted record at ``epochs`` (≥ e0), started from ``omega0``; shape (T, k)."""
    if record.get("kappa") is None:
        raise ValueError(f"law {record.get('law')!r} has no fit: {record.get('reason')}")
    law = law_for_flow(str(record["law"]), record["n"], int(record["C"]))
    t = float(record["kappa"]) * (np.asarray(epochs, dtype=np.float64) - float(record["e0"]))
    return law.omega(np.maximum(t, 0.0), omega0)


def _flag(value: Any) -> bool | None:
    """A boolean cell (bool, 0/1, "True"/"False"); None when absent or NaN."""
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text == "true" else (False if text == "false" else None)
    number = _float(value)
    return None if math.isnan(number) else bool(number)


def _integral(x: float) -> float | int:
    """``x`` as an int when it is one (up to rounding of the law's coefficients)."""
    return int(round(x)) if abs(x - round(x)) <= 1e-9 * max(1.0, abs(x)) else float(x)


def _int_or_none(value: Any) -> int | None:
    number = _float(value)
    return int(number) if math.isfinite(number) and number > 0 else None
