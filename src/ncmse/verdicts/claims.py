"""Verdicts on the paper's claims for one run, and the MSE–CE accuracy gap of several (SPEC §7).

A run answers "did it show what the paper claims?" with the claims of the SPEC §7 table, each
evaluated on the run's *training-split* measurement rows (the rows of ``metrics.jsonl``: plain
dicts with SPEC names; ``snr`` as a list or expanded to ``snr_1 … snr_k``; ``test_*`` keys are
ignored). Rows are taken in epoch order whatever order they come in; a duplicated or missing
epoch is an :class:`~ncmse.errors.InputError` (:func:`ncmse.rundir.reader.order_rows`).

=======================  ==========================================================  ==========
id                       value                                                       holds when
=======================  ==========================================================  ==========
``identity``             max_e |L − (L_NC1 + L_NC2/3 + L_⊥)| / L                     ≤ 1e-10
``tpt_reached``          TPT epoch (first zero training error)                       not null
``perp_small``           median of L_⊥/L from TPT on (square-loss runs)              ≤ 0.1
``perp_falls``           L_⊥/L first ÷ last (square-loss runs); L_NC1 + L_NC2/3 too   ≥ 10; ≥ 2
``nc1_falls``            nc1 first ÷ last                                            ≥ 100
``nc1_falls_after_tpt``  nc1 TPT ÷ last                                              ≥ 3
``nc2_nc3_nc4_fall``     how many of the NC2–NC4 parts pass (below)                  all
``snr_grows``            ω_min last ÷ ω_min at TPT                                   ≥ 2
``snr_equalises``        log(ω_max/ω_min) at TPT ÷ log(ω_max/ω_min) last             ≥ 2
=======================  ==========================================================  ==========

The parts of ``nc2_nc3_nc4_fall``: each of ``equinorm_means``, ``equiangular_means``,
``maxangle_means`` and ``nc3`` falls by first ÷ last ≥ 2, and ``nc4`` last ≤ 0.01, each with the
noise rule; the three metrics of the means do not apply at C = 2 (they are 0 by construction).

"First", "TPT" and "last" are the first measurement (epoch 0 when measured: the network as
initialised), the first measurement at or after the TPT epoch, and the last measurement.

**Size, noise and three outcomes.** Every claim but ``identity`` and ``tpt_reached`` is decided
by the noise rule: for the claim's series m_e (e.g. nc1) over its window — the measurements from
TPT on for the post-TPT claims (``perp_small``, ``nc1_falls_after_tpt``, ``snr_grows``,
``snr_equalises``), else the last half of the run (epochs ≥ (first + last)/2) — the scatter in log

    σ = 1.4826 · median_e |log m_e − log m_{e−1}| / √2

is recorded as ``noise`` (natural log; two equal values differ by 0, a value and a 0 by ∞). With
``margin`` = log(value) − log(threshold) for "≥" claims (log(threshold) − log(value) for "≤"),
``holds`` is True when margin > 3σ, False when margin < −3σ and None otherwise, with the reason
"within noise of the threshold". A window with a single measurement gives no σ: the claim is
then inconclusive.

**Records.** Each claim is a dict ``{"id", "statement", "value", "threshold", "noise", "holds",
"reason"}`` (JSON-ready: NaN is None). ``holds`` is True, False or None; :func:`outcome_of` names
the four outcomes. A claim that does not apply has ``holds`` None and a ``reason`` starting with
``"not applicable: "`` (a cross-entropy run for the L_⊥ claims; no TPT, or the TPT at the last
measurement, for the post-TPT claims; C = 2 for ``snr_equalises``; a single measurement; a
degenerate last measurement, below). A decided claim's ``reason`` says what went into the value.

**Degenerate runs.** When the last measurement carries a degenerate-feature flag (SPEC §2, the
``flags`` column), the trend claims (``perp_falls``, ``nc1_falls``, ``nc1_falls_after_tpt``,
``nc2_nc3_nc4_fall``, ``snr_grows``, ``snr_equalises``) are not applicable, with the flag as the
reason. One exception, a decision of this project: ``within_class_singular`` alone makes only the
two ω claims not applicable. Σ_W singular is what exact collapse in a direction looks like (and a
dead ReLU unit gives it too); nc1 = Tr(Σ_W Σ_B^†)/C, the NC2–NC4 metrics and L_⊥ keep their
meaning there, so refusing their verdict would refuse it to the most collapsed runs — whereas the
ω are then generalised singular values, +∞ in some directions, whose growth and spread say
nothing. The pathological runs this rule is meant for (dead features, rank-1 features) also carry
``no_between_class_spread`` or ``between_class_rank_deficient``, which do apply to every trend
claim.

The rescaled MSE counts as a square-loss run: its decomposition is that of the classifier divided
by M (exact for k = 1, an approximation otherwise; :mod:`ncmse.train.losses`).

Examples
--------
>>> import math
>>> rows = [
...     {"epoch": e, "train_error": 0.5 if e == 0 else 0.0, "loss": 0.9 * 2.0**-e + 0.1 * 4.0**-e,
...      "loss_nc1": 0.5 * 2.0**-e, "loss_nc23": 0.4 * 2.0**-e, "loss_perp": 0.1 * 4.0**-e,
...      "nc1": 10.0 * 4.0**-e,
...      "equinorm_means": 2.0**-e, "equiangular_means": 2.0**-e, "maxangle_means": 2.0**-e,
...      "nc3": 2.0**-e, "nc4": 0.0, "snr": [3.0 * 2.0**e, 2.0**e], "num_classes": 3}
...     for e in range(9)
... ]
>>> claims = evaluate_claims(rows, loss="mse", tpt_epoch=tpt_epoch_of(rows))
>>> [(c["id"], outcome_of(c)) for c in claims][-3:]  # the ω keep their ratio 3
[('nc2_nc3_nc4_fall', 'holds'), ('snr_grows', 'holds'), ('snr_equalises', 'fails')]
>>> format_tally(claims)
'claims: 8 hold, 1 fail (snr_equalises), 0 inconclusive'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncmse.rundir.format import number, snr_columns
from ncmse.rundir.reader import order_rows

__all__ = [
    "CLAIM_IDS",
    "OUTCOMES",
    "RECORD_KEYS",
    "SQUARE_LOSSES",
    "TREND_CLAIMS",
    "claims_are_current",
    "evaluate_claims",
    "format_tally",
    "holds_when",
    "log_noise",
    "loss_kind",
    "omega_of",
    "outcome_of",
    "tally",
    "in_tpt",
    "tpt_epoch_of",
]

#: ids of the per-run claims, in the order of the SPEC §7 table
CLAIM_IDS: tuple[str, ...] = (
    "identity",
    "tpt_reached",
    "perp_small",
    "perp_falls",
    "nc1_falls",
    "nc1_falls_after_tpt",
    "nc2_nc3_nc4_fall",
    "snr_grows",
    "snr_equalises",
)
#: claims about a state of the run (an identity, TPT reached, L_⊥ small), not about a trend
_STATE_CLAIMS = frozenset({"identity", "tpt_reached", "perp_small"})
#: claims about a trend, in :data:`CLAIM_IDS` order: not applicable when the last measurement
#: is degenerate
TREND_CLAIMS: tuple[str, ...] = tuple(c for c in CLAIM_IDS if c not in _STATE_CLAIMS)
#: the keys of a claim record, in order (SPEC §7)
RECORD_KEYS: tuple[str, ...] = (
    "id",
    "statement",
    "value",
    "threshold",
    "noise",
    "holds",
    "reason",
)
#: the outcomes :func:`outcome_of` returns
OUTCOMES: tuple[str, ...] = ("holds", "fails", "inconclusive", "not applicable")
#: loss names whose runs are tested against the L_⊥ claims
SQUARE_LOSSES: frozenset[str] = frozenset({"mse", "rescaled_mse"})

#: thresholds of the SPEC §7 table
IDENTITY_TOL = 1e-10
PERP_SMALL = 0.1
PERP_FALL_FACTOR = 10.0
NC1_FALL_FACTOR = 100.0
NC1_AFTER_TPT_FACTOR = 3.0
NC234_FALL_FACTOR = 2.0
#: perp_falls also asks L_NC1 + L_NC2/3 to fall by this factor (claim 2's "while … fall")
LS_FALL_FACTOR = 2.0
NC4_LAST_MAX = 0.01
SNR_GROW_FACTOR = 2.0
SNR_EQUALISE_FACTOR = 2.0
#: the noise rule: a verdict needs the margin in log to exceed this many σ
NOISE_SIGMAS = 3.0
#: σ of a normal variable from the median absolute value (1/Φ⁻¹(3/4))
_MAD_SCALE = 1.4826

WITHIN_NOISE = "within noise of the threshold"
NOT_APPLICABLE = "not applicable: "
#: the flag that makes only the ω claims not applicable (module docstring)
_OMEGA_ONLY_FLAG = "within_class_singular"
_OMEGA_CLAIMS = frozenset({"snr_grows", "snr_equalises"})
#: NC2/NC3 metrics of ``nc2_nc3_nc4_fall`` that fall by a factor; the first three are of the means
_MEANS_METRICS: tuple[str, ...] = ("equinorm_means", "equiangular_means", "maxangle_means")
_FALL_METRICS: tuple[str, ...] = (*_MEANS_METRICS, "nc3")

_LOSS_ALIASES = {
    "cross_entropy": "ce",
    "crossentropy": "ce",
    "cross-entropy": "ce",
    "rescaled-mse": "rescaled_mse",
}

_STATEMENTS: dict[str, str] = {
    "identity": "L = L_NC1 + L_NC2/3 + L_⊥ at every measurement (max relative residual)",
    "tpt_reached": "training error reaches zero (the terminal phase of training, TPT)",
    "perp_small": "L_⊥/L is small from TPT on (median over those measurements)",
    "perp_falls": "L_⊥/L falls by at least 10× during training (first ÷ last) while L_NC1 + "
    "L_NC2/3 falls by at least 2×",
    "nc1_falls": "nc1 falls by orders of magnitude, at least 100× (first ÷ last)",
    "nc1_falls_after_tpt": "nc1 keeps falling after training error reaches zero, at least 3× "
    "(TPT ÷ last)",
    "nc2_nc3_nc4_fall": "equinorm, equiangularity and max-angle of the means and nc3 fall at "
    "least 2× (first ÷ last), and nc4 ends ≤ 0.01 (how many of these pass)",
    "snr_grows": "the smallest ω_j grows at least 2× after TPT (ω_min last ÷ TPT)",
    "snr_equalises": "the ω_j equalise after TPT: the spread log(ω_max/ω_min) halves (TPT ÷ last)",
}


# --------------------------------------------------------------------------------------------
# reading rows
# --------------------------------------------------------------------------------------------


def omega_of(row: Mapping[str, Any]) -> np.ndarray:
    """The SNR singular values ω_1 … ω_k of a training-split row, shape (k,).

    Reads ``snr`` (a list, as in metrics.jsonl) or the columns ``snr_1 … snr_k`` (metrics.csv);
    missing cells are NaN. Empty when the row has neither.
    """
    snr = row.get("snr")
    if isinstance(snr, (list, tuple, np.ndarray)):
        return np.array([number(v) for v in snr], dtype=np.float64)
    return np.array([number(row[k]) for k in snr_columns(map(str, row))], dtype=np.float64)


def in_tpt(row: Mapping[str, Any]) -> bool:
    """Whether the measurement ``row`` is in the terminal phase of training: an epoch > 0 with
    zero training error (``train_error``, else 1 − ``accuracy``). The one definition of TPT:
    the trainer's ``tpt_epoch`` and :func:`tpt_epoch_of` both use it."""
    epoch, error = number(row.get("epoch")), number(row.get("train_error"))
    if math.isnan(error):
        error = 1.0 - number(row.get("accuracy"))
    return epoch > 0 and error == 0.0


def tpt_epoch_of(rows: Sequence[Mapping[str, Any]]) -> int | None:
    """First measured epoch in TPT (:func:`in_tpt`; summary.json ``tpt_epoch``), or None.

    The rows are taken in epoch order.
    """
    for row in sorted(rows, key=lambda r: number(r.get("epoch"))):
        if in_tpt(row):
            return int(number(row.get("epoch")))
    return None


def loss_kind(loss: str | None) -> str:
    """Normalised loss name: ``"mse"``, ``"rescaled_mse"``, ``"ce"``, else the lower-cased name."""
    if not loss:
        return "unknown"
    name = str(loss).strip().lower()
    return _LOSS_ALIASES.get(name, name)


def _ratio(num: float, den: float) -> float:
    """``num / den`` with 0/0 = NaN and x/0 = ±∞ (for x ≠ 0), NaN in → NaN out; ∞/∞ = NaN."""
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0.0:
        return math.nan if num == 0.0 else math.copysign(math.inf, num)
    with np.errstate(invalid="ignore"):
        return float(np.float64(num) / np.float64(den))


def _perp_ratio(row: Mapping[str, Any]) -> float:
    perp, loss = number(row.get("loss_perp")), number(row.get("loss"))
    if not (math.isnan(perp) or math.isnan(loss)):
        return _ratio(perp, loss)
    return number(row.get("loss_perp_ratio"))


def _omega_min(row: Mapping[str, Any]) -> float:
    """ω_min of a row (NaN when any ω is NaN or the row has none)."""
    omega = omega_of(row)
    if omega.size == 0 or np.isnan(omega).any():
        return math.nan
    return float(omega.min())


def _log_spread(row: Mapping[str, Any]) -> float:
    """log(ω_max/ω_min) of a row (NaN when any ω is NaN, ≤ 0 or the row has none)."""
    omega = omega_of(row)
    if omega.size == 0 or np.isnan(omega).any() or (omega <= 0).any():
        return math.nan
    return math.log(_ratio(float(omega.max()), float(omega.min())))


def _flags(row: Mapping[str, Any]) -> list[str]:
    text = row.get("flags")
    if isinstance(text, (list, tuple)):
        return [str(f) for f in text if f]
    if not isinstance(text, str):
        return []
    return [f.strip() for f in text.split(";") if f.strip()]


# --------------------------------------------------------------------------------------------
# the noise rule
# --------------------------------------------------------------------------------------------


def _log_step(a: float, b: float) -> float:
    """|log b − log a| for non-negative a, b: 0 when equal (also 0 → 0), ∞ between 0 and > 0."""
    if a == b:
        return 0.0
    if a <= 0.0 or b <= 0.0 or math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(math.log(b) - math.log(a))


def log_noise(series: Iterable[float]) -> float:
    """σ = 1.4826 · median |log m_e − log m_{e−1}| / √2 of a series (SPEC §7 *Noise*).

    Parameters
    ----------
    series : iterable of float, shape (n,)
        Non-negative values in epoch order; NaN entries are left out.

    Returns
    -------
    float
        The per-measurement scatter in natural log; NaN with fewer than two values; ∞ when most
        steps go to or from 0 (or ∞).

    Examples
    --------
    >>> log_noise([1.0, 1.0, 1.0])
    0.0
    >>> round(log_noise([1.0, math.e, 1.0, math.e]), 4)  # every step is 1 in log
    1.0484
    """
    values = [v for v in (float(x) for x in series) if not math.isnan(v)]
    if len(values) < 2:
        return math.nan
    steps = [_log_step(a, b) for a, b in zip(values, values[1:])]
    return _MAD_SCALE * float(np.median(steps)) / math.sqrt(2.0)


@dataclass(frozen=True)
class _Check:
    """One value compared with its threshold by the noise rule."""

    value: float
    holds: bool | None
    noise: float
    detail: str


def _decide(value: float, threshold: float, noise: float, *, at_most: bool) -> bool | None:
    """The three outcomes: True when the log margin exceeds 3σ, False below −3σ, else None."""
    if math.isnan(value) or value < 0.0 or math.isnan(noise):
        return None
    with np.errstate(divide="ignore"):
        log_value = float(np.log(np.float64(value)))
    margin = math.log(threshold) - log_value if at_most else log_value - math.log(threshold)
    band = NOISE_SIGMAS * noise
    if margin > band:
        return True
    if margin < -band:
        return False
    return None


def _check(
    value: float, threshold: float, window: Sequence[float], *, at_most: bool, detail: str
) -> _Check:
    noise = log_noise(window)
    return _Check(value, _decide(value, threshold, noise, at_most=at_most), noise, detail)


# --------------------------------------------------------------------------------------------
# the run the claims look at
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """What the claim functions read: the rows in epoch order and the run's facts."""

    rows: list[Mapping[str, Any]]
    loss: str
    square_reason: str  # why the L_⊥ claims do not apply ("" when they do)
    tpt_epoch: int | None
    tpt_index: int | None  # the first row at or after the TPT epoch
    num_classes: int | None
    flags: tuple[str, ...]  # degenerate-feature flags of the last measurement

    @property
    def first(self) -> Mapping[str, Any]:
        return self.rows[0]

    @property
    def last(self) -> Mapping[str, Any]:
        return self.rows[-1]

    def epoch(self, index: int) -> str:
        epoch = number(self.rows[index].get("epoch"))
        return "?" if math.isnan(epoch) else f"{epoch:g}"

    def late_half(self) -> list[Mapping[str, Any]]:
        """The measurements of the last half of the run (epochs ≥ (first + last)/2)."""
        lo, hi = number(self.first.get("epoch")), number(self.last.get("epoch"))
        middle = 0.5 * (lo + hi)
        return [r for r in self.rows if number(r.get("epoch")) >= middle]

    def after_tpt(self) -> list[Mapping[str, Any]]:
        """The measurements from TPT on (empty without a TPT)."""
        return [] if self.tpt_index is None else self.rows[self.tpt_index :]

    def tpt_reason(self) -> str:
        """Why no TPT-to-last comparison can be made ("" when it can)."""
        if self.tpt_epoch is None:
            return "no TPT: training error never reached zero"
        if self.tpt_index is None:
            return f"no measurement at or after the TPT epoch {self.tpt_epoch:g}"
        if self.tpt_index == len(self.rows) - 1:
            return f"the TPT (epoch {self.epoch(self.tpt_index)}) is the last measurement"
        return ""


def _build_run(
    rows: Sequence[Mapping[str, Any]],
    loss: str | None,
    tpt_epoch: float | None,
    lam_exact: bool,
    num_classes: int | None,
) -> _Run:
    ordered = order_rows(rows)
    kind = loss_kind(loss)
    if kind not in SQUARE_LOSSES:
        square_reason = (
            f"a {kind} run, not a square-loss run: the MSE decomposition does not describe what "
            "it optimised"
        )
    elif not lam_exact:
        square_reason = (
            "the decomposition is only approximate for this run (lam_exact false: a rescaled "
            "MSE with k ≠ 1, or a λ other than the one training applied)"
        )
    else:
        square_reason = ""
    tpt = None if tpt_epoch is None else int(tpt_epoch)
    index = None
    if tpt is not None:
        epochs = [number(r.get("epoch")) for r in ordered]
        index = next((i for i, e in enumerate(epochs) if e >= tpt), None)
    return _Run(
        ordered,
        kind,
        square_reason,
        tpt,
        index,
        _classes(ordered, num_classes),
        tuple(_flags(ordered[-1])) if ordered else (),
    )


def _classes(rows: Sequence[Mapping[str, Any]], num_classes: int | None) -> int | None:
    """C: given, else the rows' ``num_classes``, else the number of ω plus one."""
    if num_classes is not None:
        return int(num_classes)
    if not rows:
        return None
    value = number(rows[-1].get("num_classes"))
    if math.isfinite(value) and value >= 1:
        return int(value)
    k = omega_of(rows[-1]).size
    return k + 1 if k else None


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


def _json_float(value: float | int | None) -> float | int | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _record(
    claim_id: str,
    value: float | int | None,
    threshold: float | None,
    noise: float | None,
    holds: bool | None,
    reason: str,
) -> dict[str, Any]:
    return {
        "id": claim_id,
        "statement": _STATEMENTS[claim_id],
        "value": _json_float(value),
        "threshold": threshold,
        "noise": _json_float(noise),
        "holds": holds,
        "reason": reason,
    }


def _not_applicable(claim_id: str, threshold: float | None, why: str) -> dict[str, Any]:
    return _record(claim_id, None, threshold, None, None, NOT_APPLICABLE + why)


def _from_check(claim_id: str, threshold: float, check: _Check) -> dict[str, Any]:
    """The record of a claim decided by one :class:`_Check`."""
    if math.isnan(check.value):
        reason = f"the value is undefined (NaN): {check.detail}"
    elif math.isnan(check.noise):
        reason = (
            "no noise estimate (fewer than two measurements with a value in the window): "
            f"{check.detail}"
        )
    elif check.holds is None:
        reason = f"{WITHIN_NOISE}: {check.detail}"
    else:
        reason = check.detail
    return _record(claim_id, check.value, threshold, check.noise, check.holds, reason)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _window_text(rows: Sequence[Mapping[str, Any]], noise: float) -> str:
    if not rows:
        return "no measurement in the noise window"
    a, b = number(rows[0].get("epoch")), number(rows[-1].get("epoch"))
    return f"σ = {_fmt(noise)} over {len(rows)} measurement(s), epochs {a:g}–{b:g}"


# --------------------------------------------------------------------------------------------
# the claims: one small function each
# --------------------------------------------------------------------------------------------


def _identity(run: _Run) -> dict[str, Any]:
    residuals = []
    for row in run.rows:
        loss = number(row.get("loss"))
        parts = sum(number(row.get(k)) for k in ("loss_nc1", "loss_nc23", "loss_perp"))
        residuals.append(_ratio(abs(loss - parts), abs(loss)) if loss != 0.0 or parts else 0.0)
    bad = [run.epoch(i) for i, r in enumerate(residuals) if math.isnan(r)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return _record("identity", None, IDENTITY_TOL, None, None,
                       f"L or a part of it is undefined (NaN) at epoch {shown}")  # fmt: skip
    worst = int(np.argmax(residuals))
    value = float(residuals[worst])
    reason = f"largest relative residual at epoch {run.epoch(worst)} (no noise rule)"
    return _record("identity", value, IDENTITY_TOL, None, value <= IDENTITY_TOL, reason)


def _tpt_reached(run: _Run) -> dict[str, Any]:
    if run.tpt_epoch is None:
        return _record("tpt_reached", None, None, None, False,
                       "training error never reached zero")  # fmt: skip
    return _record("tpt_reached", run.tpt_epoch, None, None, True,
                   f"zero training error first measured at epoch {run.tpt_epoch}")  # fmt: skip


def _perp_small(run: _Run) -> dict[str, Any]:
    if run.square_reason:
        return _not_applicable("perp_small", PERP_SMALL, run.square_reason)
    if run.tpt_index is None:
        return _not_applicable("perp_small", PERP_SMALL, run.tpt_reason())
    window = [_perp_ratio(r) for r in run.after_tpt()]
    value = math.nan if any(math.isnan(v) for v in window) else float(np.median(window))
    check = _check(value, PERP_SMALL, window, at_most=True, detail="")
    detail = (
        f"median L_⊥/L {_fmt(value)} over the {len(window)} measurement(s) from epoch "
        f"{run.epoch(run.tpt_index)} on; {_window_text(run.after_tpt(), check.noise)}"
    )
    return _from_check("perp_small", PERP_SMALL, _Check(value, check.holds, check.noise, detail))


def _first_last(
    claim_id: str,
    run: _Run,
    series: Callable[[Mapping[str, Any]], float],
    name: str,
    threshold: float,
    *,
    after_tpt: bool,
) -> dict[str, Any]:
    """A "falls/grows by a factor" claim: series(start) ÷ series(last), or its inverse."""
    start = run.tpt_index if after_tpt else 0
    window_rows = run.after_tpt() if after_tpt else run.late_half()
    a, b = series(run.rows[start]), series(run.last)
    grows = claim_id == "snr_grows"
    value = _ratio(b, a) if grows else _ratio(a, b)
    window = [series(r) for r in window_rows]
    check = _check(value, threshold, window, at_most=False, detail="")
    detail = (
        f"{name} {_fmt(a)} at epoch {run.epoch(start)} → {_fmt(b)} at epoch "
        f"{run.epoch(len(run.rows) - 1)}; {_window_text(window_rows, check.noise)}"
    )
    return _from_check(claim_id, threshold, _Check(value, check.holds, check.noise, detail))


def _single_reason(run: _Run) -> str:
    if len(run.rows) > 1:
        return ""
    return f"a single measurement (epoch {run.epoch(0)}): nothing to compare"


def _perp_falls(run: _Run) -> dict[str, Any]:
    """L_⊥/L falls ≥ 10× *while* L_NC1 + L_NC2/3 falls ≥ 2× (SPEC §7 claim 2).

    The second condition is claim 2's "while L_NC1 and L_NC2/3 fall": without it a network
    whose features never move (``freeze_features``) holds the claim, because its classifier
    simply converges to the least-squares classifier of those fixed features (L_⊥/L ÷3e4 on
    the default data) — approach to the central path without any collapse. Both parts are
    decided by the noise rule; ``value`` is the L_⊥/L factor.
    """
    why = run.square_reason or _single_reason(run)
    if why:
        return _not_applicable("perp_falls", PERP_FALL_FACTOR, why)
    perp = _first_last("perp_falls", run, _perp_ratio, "L_⊥/L", PERP_FALL_FACTOR,
                       after_tpt=False)  # fmt: skip
    ls = _first_last("perp_falls", run, _ls_loss, "L_NC1 + L_NC2/3", LS_FALL_FACTOR,
                     after_tpt=False)  # fmt: skip
    detail = f"{perp['reason']}; and {ls['reason']}"
    if perp["holds"] is False:
        holds = False
    elif ls["holds"] is False:
        holds = False
        detail = (
            f"L_NC1 + L_NC2/3 did not fall {LS_FALL_FACTOR:g}×: the classifier approached the "
            f"central path of features that did not collapse; {detail}"
        )
    elif perp["holds"] is True and ls["holds"] is True:
        holds = True
    else:
        holds = None
    return {**perp, "holds": holds, "reason": detail}


def _ls_loss(row: Mapping[str, Any]) -> float:
    """L_NC1 + L_NC2/3 of a row (= L_LS, the loss of the least-squares classifier)."""
    return number(row.get("loss_nc1")) + number(row.get("loss_nc23"))


def _nc1_falls(run: _Run) -> dict[str, Any]:
    if why := _single_reason(run):
        return _not_applicable("nc1_falls", NC1_FALL_FACTOR, why)
    series = lambda r: number(r.get("nc1"))  # noqa: E731
    return _first_last("nc1_falls", run, series, "nc1", NC1_FALL_FACTOR, after_tpt=False)


def _nc1_falls_after_tpt(run: _Run) -> dict[str, Any]:
    if why := run.tpt_reason():
        return _not_applicable("nc1_falls_after_tpt", NC1_AFTER_TPT_FACTOR, why)
    series = lambda r: number(r.get("nc1"))  # noqa: E731
    return _first_last("nc1_falls_after_tpt", run, series, "nc1", NC1_AFTER_TPT_FACTOR,
                       after_tpt=True)  # fmt: skip


def _snr_grows(run: _Run) -> dict[str, Any]:
    why = run.tpt_reason() or ("" if omega_of(run.last).size else "no ω measured")
    if why:
        return _not_applicable("snr_grows", SNR_GROW_FACTOR, why)
    return _first_last("snr_grows", run, _omega_min, "ω_min", SNR_GROW_FACTOR, after_tpt=True)


def _snr_equalises(run: _Run) -> dict[str, Any]:
    k = omega_of(run.last).size
    why = run.tpt_reason() or (
        "" if k >= 2 else "no ω measured" if k == 0 else "a single ω_j (C = 2): nothing to equalise"
    )
    if why:
        return _not_applicable("snr_equalises", SNR_EQUALISE_FACTOR, why)
    return _first_last("snr_equalises", run, _log_spread, "log(ω_max/ω_min)",
                       SNR_EQUALISE_FACTOR, after_tpt=True)  # fmt: skip


def _nc234_parts(run: _Run) -> list[tuple[str, _Check]]:
    """The parts of ``nc2_nc3_nc4_fall``, each decided by the noise rule."""
    late = run.late_half()
    # C unknown (old rows without num_classes or ω): the metrics of the means are kept
    names = _FALL_METRICS if run.num_classes is None or run.num_classes > 2 else ("nc3",)
    parts = []
    for name in names:
        a, b = number(run.first.get(name)), number(run.last.get(name))
        window = [number(r.get(name)) for r in late]
        check = _check(_ratio(a, b), NC234_FALL_FACTOR, window, at_most=False, detail="")
        parts.append(
            (
                name,
                _Check(
                    check.value,
                    check.holds,
                    check.noise,
                    f"{name} {_fmt(a)} → {_fmt(b)} (σ {_fmt(check.noise)})",
                ),
            )
        )
    b = number(run.last.get("nc4"))
    check = _check(b, NC4_LAST_MAX, [number(r.get("nc4")) for r in late], at_most=True, detail="")
    parts.append(("nc4", _Check(b, check.holds, check.noise,
                                f"nc4 last {_fmt(b)} (σ {_fmt(check.noise)})")))  # fmt: skip
    return parts


def _nc2_nc3_nc4_fall(run: _Run) -> dict[str, Any]:
    if why := _single_reason(run):
        return _not_applicable("nc2_nc3_nc4_fall", None, why)
    parts = _nc234_parts(run)
    passed = [n for n, c in parts if c.holds is True]
    failed = [n for n, c in parts if c.holds is False]
    open_ = [(n, c) for n, c in parts if c.holds is None]
    noises = [c.noise for _, c in parts if math.isfinite(c.noise)]
    noise = max(noises) if noises else math.nan
    details = "; ".join(c.detail for _, c in parts)
    scope = "" if len(parts) == 5 else "C = 2: the three metrics of the means do not apply; "
    if failed:
        holds, reason = False, f"did not pass: {', '.join(failed)}; {scope}{details}"
    elif open_:
        undefined = [n for n, c in open_ if math.isnan(c.value)]
        lead = (
            f"undefined (NaN): {', '.join(undefined)}"
            if undefined
            else f"{WITHIN_NOISE}: {', '.join(n for n, _ in open_)}"
        )
        holds, reason = None, f"{lead}; {scope}{details}"
    else:
        holds, reason = True, f"all {len(parts)} pass; {scope}{details}"
    return _record("nc2_nc3_nc4_fall", len(passed), len(parts), noise, holds, reason)


#: the claims in the order of :data:`CLAIM_IDS`
_CLAIMS: tuple[tuple[str, Callable[[_Run], dict[str, Any]]], ...] = (
    ("identity", _identity),
    ("tpt_reached", _tpt_reached),
    ("perp_small", _perp_small),
    ("perp_falls", _perp_falls),
    ("nc1_falls", _nc1_falls),
    ("nc1_falls_after_tpt", _nc1_falls_after_tpt),
    ("nc2_nc3_nc4_fall", _nc2_nc3_nc4_fall),
    ("snr_grows", _snr_grows),
    ("snr_equalises", _snr_equalises),
)
_THRESHOLDS: dict[str, float | None] = {
    "perp_falls": PERP_FALL_FACTOR,
    "nc1_falls": NC1_FALL_FACTOR,
    "nc1_falls_after_tpt": NC1_AFTER_TPT_FACTOR,
    "nc2_nc3_nc4_fall": None,
    "snr_grows": SNR_GROW_FACTOR,
    "snr_equalises": SNR_EQUALISE_FACTOR,
}


def _degenerate_reason(run: _Run, claim_id: str) -> str:
    """Why a trend claim is not applicable on a degenerate run ("" when it applies)."""
    if claim_id not in TREND_CLAIMS or not run.flags:
        return ""
    flags = [f for f in run.flags if f != _OMEGA_ONLY_FLAG or claim_id in _OMEGA_CLAIMS]
    if not flags:
        return ""
    return (
        f"the last measurement (epoch {run.epoch(len(run.rows) - 1)}) has degenerate features "
        f"({', '.join(flags)}, SPEC §2)"
    )


def evaluate_claims(
    rows: Sequence[Mapping[str, Any]],
    *,
    loss: str | None,
    tpt_epoch: int | float | None,
    lam_exact: bool = True,
    num_classes: int | None = None,
) -> list[dict[str, Any]]:
    """The SPEC §7 verdicts of one run.

    Parameters
    ----------
    rows : sequence of mapping
        The run's measurements, in any order (they are taken in epoch order; a duplicated or
        missing epoch raises). Training-split names are read (``epoch``, ``train_error``,
        ``loss``, ``loss_nc1``, ``loss_nc23``, ``loss_perp``, ``nc1``, ``equinorm_means``,
        ``equiangular_means``, ``maxangle_means``, ``nc3``, ``nc4``, ``snr``, ``flags``,
        ``num_classes``); ``test_*`` keys are ignored.
    loss : str or None
        The loss the run was trained with (``mse``, ``ce``, ``rescaled_mse``). The L_⊥ claims apply
        to square-loss runs only.
    tpt_epoch : int or None
        The run's TPT epoch (summary.json ``tpt_epoch``; :func:`tpt_epoch_of` computes it from the
        rows), None when training error never reached zero.
    lam_exact : bool
        Whether the rows' decomposition is that of the objective the run minimised
        (summary.json ``lam_exact``; false for a rescaled MSE with k ≠ 1 or a λ other than
        training's). When false the L_⊥ claims are not applicable.
    num_classes : int, optional
        C (default: the rows' ``num_classes``, else the number of ω plus one).

    Returns
    -------
    list of dict
        One record per id of :data:`CLAIM_IDS`, in that order (keys :data:`RECORD_KEYS`).

    Raises
    ------
    InputError
        If two rows have the same epoch or a row has no finite epoch.
    """
    if not rows:
        return [_not_applicable(cid, _THRESHOLDS.get(cid), "no measurement yet")
                for cid in CLAIM_IDS]  # fmt: skip
    run = _build_run(rows, loss, tpt_epoch, bool(lam_exact), num_classes)
    claims = []
    for claim_id, evaluate in _CLAIMS:
        why = _degenerate_reason(run, claim_id)
        claims.append(
            _not_applicable(claim_id, _THRESHOLDS.get(claim_id), why) if why else evaluate(run)
        )
    return claims


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------

_HOLDS_WHEN: dict[str, str] = {
    "identity": f"≤ {IDENTITY_TOL:g} (no noise rule)",
    "tpt_reached": "not null",
    "perp_small": f"≤ {PERP_SMALL:g} by more than 3σ",
    "perp_falls": (
        f"≥ {PERP_FALL_FACTOR:g}× (and L_NC1 + L_NC2/3 ≥ {LS_FALL_FACTOR:g}×) by more than 3σ"
    ),
    "nc1_falls": f"≥ {NC1_FALL_FACTOR:g}× by more than 3σ",
    "nc1_falls_after_tpt": f"≥ {NC1_AFTER_TPT_FACTOR:g}× by more than 3σ",
    "nc2_nc3_nc4_fall": f"all pass (each falls ≥ {NC234_FALL_FACTOR:g}×, nc4 last ≤ "
    f"{NC4_LAST_MAX:g}; each by more than 3σ)",
    "snr_grows": f"≥ {SNR_GROW_FACTOR:g}× by more than 3σ",
    "snr_equalises": f"≥ {SNR_EQUALISE_FACTOR:g}× by more than 3σ",
}


def holds_when(claim_id: str) -> str:
    """The rule of a claim in words, e.g. ``"≥ 100× by more than 3σ"`` ("" for an unknown id).

    >>> holds_when("perp_small")
    '≤ 0.1 by more than 3σ'
    """
    return _HOLDS_WHEN.get(claim_id, "")


def outcome_of(claim: Mapping[str, Any]) -> str:
    """``"holds"``, ``"fails"``, ``"inconclusive"`` or ``"not applicable"`` of a claim record.

    >>> outcome_of({"holds": None, "reason": "not applicable: a ce run"})
    'not applicable'
    """
    if claim.get("holds") is True:
        return "holds"
    if claim.get("holds") is False:
        return "fails"
    reason = claim.get("reason") or claim.get("note") or ""
    return "not applicable" if reason.startswith("not applicable") else "inconclusive"


def claims_are_current(claims: Any) -> bool:
    """Whether recorded claims follow the current rules (every id, every record key).

    Records of older versions (``relation``/``note``, no ``noise``/``reason``, no ``snr_grows``)
    are stale: a reader re-evaluates them from the run's rows.
    """
    if not isinstance(claims, list) or not all(isinstance(c, Mapping) for c in claims):
        return False
    return [c.get("id") for c in claims] == list(CLAIM_IDS) and all(
        set(RECORD_KEYS) <= set(c) for c in claims
    )


def tally(claims: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Claim ids by outcome: ``{"hold", "fail", "inconclusive", "not_applicable"}`` → ids."""
    keys = {"holds": "hold", "fails": "fail", "inconclusive": "inconclusive",
            "not applicable": "not_applicable"}  # fmt: skip
    out: dict[str, list[str]] = {k: [] for k in keys.values()}
    for claim in claims:
        out[keys[outcome_of(claim)]].append(str(claim.get("id")))
    return out


def format_tally(claims: Iterable[Mapping[str, Any]], *, report: Any = None) -> str:
    """One console line counting the outcomes by name.

    ``claims: 5 hold, 2 fail (snr_equalises, perp_falls), 1 inconclusive (x), 1 not applicable
    (y); report: PATH`` — failed, inconclusive and not-applicable claims are named; the
    not-applicable part only when there is one.
    """
    t = tally(claims)
    parts = [f"{len(t['hold'])} hold"]
    for key, word in (("fail", "fail"), ("inconclusive", "inconclusive")):
        ids = t[key]
        parts.append(f"{len(ids)} {word}" + (f" ({', '.join(ids)})" if ids else ""))
    if t["not_applicable"]:
        parts.append(f"{len(t['not_applicable'])} not applicable "
                     f"({', '.join(t['not_applicable'])})")  # fmt: skip
    line = "claims: " + ", ".join(parts)
    return line if report is None else f"{line}; report: {report}"
