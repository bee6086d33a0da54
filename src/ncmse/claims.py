"""Verdicts on the paper's claims for one run, and the MSE–CE accuracy gap of several (SPEC §7).

A run answers "did it show what the paper claims?" with the claims of the SPEC §7 table, each
evaluated on the run's *training-split* measurement rows (the rows of ``metrics.jsonl``: plain
dicts with SPEC names; ``snr`` as a list or expanded to ``snr_1 … snr_k``; ``test_*`` keys are
ignored):

==========================  ====================================================  ==============
id                          value                                                 holds when
==========================  ====================================================  ==============
``identity``                max_e |L − (L_NC1 + L_NC2/3 + L_⊥)| / L                ≤ 1e-10
``tpt_reached``             TPT epoch (first zero training error)                 not null
``perp_small``              median of L_⊥/L from TPT on (square-loss runs)        ≤ 0.1
``perp_falls``              L_⊥/L last ÷ first (square-loss runs)                 < 1
``nc1_falls``               nc1 first ÷ last                                      ≥ 100
``nc1_falls_after_tpt``     nc1 TPT ÷ last                                        > 1
``nc2_nc3_nc4_fall``        how many of 5 NC2–NC4 metrics are lower last          = 5
``snr_equalises``           ω_max/ω_min last ÷ TPT                                < 1
==========================  ====================================================  ==============

"First", "TPT" and "last" are the first measurement, the first measurement at or after the TPT
epoch, and the last measurement. Each claim is a dict
``{"id", "statement", "value", "threshold", "relation", "holds", "note"}``; ``relation`` says how
``value`` is compared with ``threshold`` and ``note`` says why a claim is not applicable or what
went into the value.

``holds`` is ``True``, ``False`` or ``None``. ``None`` means the claim could not be decided: it does
not apply (L_⊥ claims on a cross-entropy run; post-TPT claims without a TPT, or with the TPT at
the last measurement), or its value is undefined (NaN — e.g. degenerate features, SPEC §2). A NaN
value never reads as a verdict. An infinite value is compared as it is (nc1 falling to exactly
0 is a fall; an infinite ω_max/ω_min is not an equalisation).

The rescaled MSE counts as a square-loss run: its decomposition is that of the classifier divided
by M (exact for k = 1, an approximation otherwise; :mod:`ncmse.losses`).

Examples
--------
>>> rows = [
...     {"epoch": 1, "train_error": 0.2, "loss": 1.0, "loss_nc1": 0.5, "loss_nc23": 0.3,
...      "loss_perp": 0.2, "nc1": 10.0, "equinorm_means": 0.3, "equiangular_means": 0.3,
...      "maxangle_means": 0.3, "nc3": 0.9, "nc4": 0.1, "snr": [4.0, 1.0]},
...     {"epoch": 9, "train_error": 0.0, "loss": 0.1, "loss_nc1": 0.05, "loss_nc23": 0.045,
...      "loss_perp": 0.005, "nc1": 0.5, "equinorm_means": 0.1, "equiangular_means": 0.1,
...      "maxangle_means": 0.1, "nc3": 0.1, "nc4": 0.0, "snr": [9.0, 6.0]},
... ]
>>> claims = evaluate_claims(rows, loss="mse", tpt_epoch=tpt_epoch_of(rows))
>>> [(c["id"], c["holds"]) for c in claims][:4]
[('identity', True), ('tpt_reached', True), ('perp_small', True), ('perp_falls', True)]
>>> for part in format_tally(claims, report="runs/x/report.html").split("; "):
...     print(part)
claims: 5/6 hold
failing: nc1_falls
not applicable: nc1_falls_after_tpt, snr_equalises
report: runs/x/report.html
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CLAIM_IDS",
    "GAP_THRESHOLD_PP",
    "SQUARE_LOSSES",
    "accuracy_gaps",
    "claim_columns",
    "evaluate_claims",
    "format_tally",
    "loss_kind",
    "omega_of",
    "outcome_of",
    "tally",
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
    "snr_equalises",
)
#: loss names whose runs are tested against the L_⊥ claims
SQUARE_LOSSES: frozenset[str] = frozenset({"mse", "rescaled_mse"})
#: claim 4 holds when |test accuracy(MSE) − test accuracy(CE)| is at most this, in points
GAP_THRESHOLD_PP = 1.0

_IDENTITY_TOL = 1e-10
_PERP_SMALL = 0.1
_NC1_FACTOR = 100.0
#: the five NC2–NC4 metrics of ``nc2_nc3_nc4_fall`` (nc4 may stay equal: it is often 0)
_FALL_METRICS: tuple[str, ...] = (
    "equinorm_means",
    "equiangular_means",
    "maxangle_means",
    "nc3",
    "nc4",
)
_LOSS_ALIASES = {
    "cross_entropy": "ce",
    "crossentropy": "ce",
    "cross-entropy": "ce",
    "rescaled-mse": "rescaled_mse",
}
_SNR_KEY = re.compile(r"^snr_(\d+)$")
_INF_TEXT = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "-inf": -math.inf,
             "-infinity": -math.inf, "nan": math.nan}  # fmt: skip

_STATEMENTS: dict[str, str] = {
    "identity": "L = L_NC1 + L_NC2/3 + L_⊥ at every measurement (max relative residual)",
    "tpt_reached": "training error reaches zero (the terminal phase of training, TPT)",
    "perp_small": "L_⊥/L is small from TPT on (median over those measurements)",
    "perp_falls": "L_⊥/L falls during training (last ÷ first)",
    "nc1_falls": "nc1 falls by orders of magnitude (first ÷ last)",
    "nc1_falls_after_tpt": "nc1 keeps falling after training error reaches zero (TPT ÷ last)",
    "nc2_nc3_nc4_fall": "equinorm, equiangularity, max-angle of the means, nc3 and nc4 fall "
    "(how many of the 5 are lower last than first; nc4 may stay equal)",
    "snr_equalises": "the ω_j equalise after TPT (ω_max/ω_min last ÷ TPT)",
}


# --------------------------------------------------------------------------------------------
# reading rows
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float:
    """A cell as a float: None/""/unparseable → NaN, "inf"/"nan" text → ±∞/NaN, bool → 0/1."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, int, float, np.number)):
        return float(value)
    text = str(value).strip()
    if text.lower() in _INF_TEXT:
        return _INF_TEXT[text.lower()]
    try:
        return float(text)
    except ValueError:
        return math.nan


def omega_of(row: Mapping[str, Any]) -> np.ndarray:
    """The SNR singular values ω_1 … ω_k of a training-split row, shape (k,).

    Reads ``snr`` (a list, as in metrics.jsonl) or the columns ``snr_1 … snr_k`` (metrics.csv);
    missing cells are NaN. Empty when the row has neither.
    """
    snr = row.get("snr")
    if isinstance(snr, (list, tuple, np.ndarray)):
        return np.array([_number(v) for v in snr], dtype=np.float64)
    found = sorted((int(m.group(1)), k) for k in row if (m := _SNR_KEY.match(str(k))))
    return np.array([_number(row[k]) for _, k in found], dtype=np.float64)


def tpt_epoch_of(rows: Sequence[Mapping[str, Any]]) -> int | None:
    """First measured epoch > 0 with zero training error (summary.json ``tpt_epoch``), or None."""
    for row in rows:
        epoch, error = _number(row.get("epoch")), _number(row.get("train_error"))
        if math.isnan(error):
            error = 1.0 - _number(row.get("accuracy"))
        if epoch > 0 and error == 0.0:
            return int(epoch)
    return None


def loss_kind(loss: str | None) -> str:
    """Normalised loss name: ``"mse"``, ``"rescaled_mse"``, ``"ce"``, else the lower-cased name."""
    if not loss:
        return "unknown"
    name = str(loss).strip().lower()
    return _LOSS_ALIASES.get(name, name)


def _ratio(num: float, den: float) -> float:
    """``num / den`` with 0/0 = NaN and x/0 = ±∞ (for x ≠ 0), NaN in → NaN out."""
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0.0:
        return math.nan if num == 0.0 else math.copysign(math.inf, num)
    return num / den


def _perp_ratio(row: Mapping[str, Any]) -> float:
    perp, loss = _number(row.get("loss_perp")), _number(row.get("loss"))
    if not (math.isnan(perp) or math.isnan(loss)):
        return _ratio(perp, loss)
    return _number(row.get("loss_perp_ratio"))


def _omega_spread(row: Mapping[str, Any]) -> float:
    """ω_max / ω_min of a row (NaN when any ω is NaN or the row has none)."""
    omega = omega_of(row)
    if omega.size == 0 or np.isnan(omega).any():
        return math.nan
    return _ratio(float(omega.max()), float(omega.min()))


# --------------------------------------------------------------------------------------------
# the claims
# --------------------------------------------------------------------------------------------


def _claim(
    claim_id: str,
    value: float | int | None,
    threshold: float | None,
    relation: str,
    *,
    note: str = "",
    applicable: bool = True,
) -> dict[str, Any]:
    """A claim dict; ``holds`` from ``value relation threshold`` unless not applicable or NaN."""
    holds: bool | None
    if not applicable:
        holds = None
    elif relation == "not null":
        holds = value is not None
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        holds = None
        note = note or "the value is undefined (NaN)"
    else:
        compare = {
            "<=": value <= threshold,
            "<": value < threshold,
            ">=": value >= threshold,
            ">": value > threshold,
            "==": value == threshold,
        }
        holds = bool(compare[relation])
    if isinstance(value, float) and math.isnan(value):
        value = None
    return {
        "id": claim_id,
        "statement": _STATEMENTS[claim_id],
        "value": value,
        "threshold": threshold,
        "relation": relation,
        "holds": holds,
        "note": note,
    }


def _nan_epochs(rows: Sequence[Mapping[str, Any]], values: Sequence[float]) -> str:
    bad = [_epoch_text(r) for r, v in zip(rows, values) if math.isnan(v)]
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return f"undefined (NaN) at epoch {shown}"


def _epoch_text(row: Mapping[str, Any]) -> str:
    epoch = _number(row.get("epoch"))
    return "?" if math.isnan(epoch) else f"{epoch:g}"


def _identity(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    residuals = []
    for row in rows:
        loss = _number(row.get("loss"))
        parts = sum(_number(row.get(k)) for k in ("loss_nc1", "loss_nc23", "loss_perp"))
        residuals.append(_ratio(abs(loss - parts), abs(loss)) if loss != 0.0 or parts else 0.0)
    if any(math.isnan(r) for r in residuals):
        return _claim(
            "identity", math.nan, _IDENTITY_TOL, "<=", note="L or a part of it is " +
            _nan_epochs(rows, residuals),
        )  # fmt: skip
    return _claim("identity", float(max(residuals)), _IDENTITY_TOL, "<=")


def evaluate_claims(
    rows: Sequence[Mapping[str, Any]],
    *,
    loss: str | None,
    tpt_epoch: int | float | None,
    lam_exact: bool = True,
) -> list[dict[str, Any]]:
    """The SPEC §7 verdicts of one run.

    Parameters
    ----------
    rows : sequence of mapping
        The run's measurements in order of epoch (metrics.jsonl / metrics.csv rows). Training-split
        names are read (``loss``, ``loss_nc1``, ``loss_nc23``, ``loss_perp``, ``nc1``,
        ``equinorm_means``, ``equiangular_means``, ``maxangle_means``, ``nc3``, ``nc4``, ``snr``,
        ``epoch``); ``test_*`` keys are ignored.
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

    Returns
    -------
    list of dict
        One dict per id of :data:`CLAIM_IDS`, in that order (see the module docstring).
    """
    rows = list(rows)
    kind = loss_kind(loss)
    if not rows:
        return [
            _claim(cid, None, None, "not null" if cid == "tpt_reached" else "<=",
                   note="no measurement yet", applicable=False)
            for cid in CLAIM_IDS
        ]  # fmt: skip
    first, last = rows[0], rows[-1]
    tpt_row, tpt_note = _tpt_row(rows, tpt_epoch)
    square = kind in SQUARE_LOSSES and bool(lam_exact)
    if kind not in SQUARE_LOSSES:
        square_note = (
            f"not a square-loss run (loss {kind}): the MSE decomposition does not describe what "
            "it optimised"
        )
    elif not lam_exact:
        square_note = (
            "the decomposition is only approximate for this run (lam_exact false: a rescaled MSE "
            "with k ≠ 1, or a λ other than the one training applied)"
        )
    else:
        square_note = ""
    claims = [_identity(rows)]

    tpt_value = None if tpt_epoch is None else int(tpt_epoch)
    claims.append(
        _claim("tpt_reached", tpt_value, None, "not null",
               note="" if tpt_value is not None else "training error never reached zero")
    )  # fmt: skip

    # perp_small: median of L_⊥/L over the measurements from TPT on
    if not square or tpt_row is None:
        claims.append(
            _claim("perp_small", None, _PERP_SMALL, "<=", note=square_note or tpt_note,
                   applicable=False)
        )  # fmt: skip
    else:
        after = rows[tpt_row:]
        ratios = [_perp_ratio(r) for r in after]
        if any(math.isnan(v) for v in ratios):
            claims.append(
                _claim("perp_small", math.nan, _PERP_SMALL, "<=",
                       note="L_⊥/L " + _nan_epochs(after, ratios))
            )  # fmt: skip
        else:
            note = f"{len(ratios)} measurement(s) from epoch {_epoch_text(after[0])} on"
            claims.append(
                _claim("perp_small", float(np.median(ratios)), _PERP_SMALL, "<=", note=note)
            )

    # first-vs-last claims need two measurements: one row compared with itself decides nothing
    single = "" if len(rows) > 1 else (
        f"a single measurement (epoch {_epoch_text(first)}): nothing to compare"
    )  # fmt: skip

    # perp_falls: L_⊥/L last ÷ first
    if not square or single:
        claims.append(_claim("perp_falls", None, 1.0, "<", note=square_note or single,
                             applicable=False))  # fmt: skip
    else:
        a, b = _perp_ratio(first), _perp_ratio(last)
        note = f"L_⊥/L {a:.4g} at epoch {_epoch_text(first)} → {b:.4g} at {_epoch_text(last)}"
        claims.append(_claim("perp_falls", _ratio(b, a), 1.0, "<", note=note))

    # nc1_falls: first ÷ last
    a, b = _number(first.get("nc1")), _number(last.get("nc1"))
    if single:
        claims.append(_claim("nc1_falls", None, _NC1_FACTOR, ">=", note=single,
                             applicable=False))  # fmt: skip
    else:
        note = f"nc1 {a:.4g} at epoch {_epoch_text(first)} → {b:.4g} at {_epoch_text(last)}"
        claims.append(_claim("nc1_falls", _ratio(a, b), _NC1_FACTOR, ">=", note=note))

    # nc1_falls_after_tpt: TPT ÷ last
    after_note = _after_tpt(rows, tpt_row, tpt_note)
    if after_note:
        claims.append(_claim("nc1_falls_after_tpt", None, 1.0, ">", note=after_note,
                             applicable=False))  # fmt: skip
    else:
        a = _number(rows[tpt_row].get("nc1"))
        note = f"nc1 {a:.4g} at epoch {_epoch_text(rows[tpt_row])} → {b:.4g} at " + _epoch_text(
            last
        )
        claims.append(_claim("nc1_falls_after_tpt", _ratio(a, b), 1.0, ">", note=note))

    if single:
        claims.append(_claim("nc2_nc3_nc4_fall", None, float(len(_FALL_METRICS)), "==",
                             note=single, applicable=False))  # fmt: skip
    else:
        claims.append(_fall_claim(first, last))

    # snr_equalises: (ω_max/ω_min) last ÷ TPT
    k = omega_of(last).size
    if after_note or k < 2:
        note = after_note or (
            "no ω measured" if k == 0 else "a single ω_j (C = 2): nothing to equalise"
        )  # fmt: skip
        claims.append(_claim("snr_equalises", None, 1.0, "<", note=note, applicable=False))
    else:
        a, b = _omega_spread(rows[tpt_row]), _omega_spread(last)
        note = (
            f"ω_max/ω_min {a:.4g} at epoch {_epoch_text(rows[tpt_row])} → {b:.4g} at "
            f"{_epoch_text(last)}"
        )
        claims.append(_claim("snr_equalises", _ratio(b, a), 1.0, "<", note=note))
    return claims


def _tpt_row(rows: Sequence[Mapping[str, Any]], tpt_epoch: float | None) -> tuple[int | None, str]:
    """Index of the first row at or after the TPT epoch, or None with the reason."""
    if tpt_epoch is None:
        return None, "no TPT: training error never reached zero"
    epochs = [_number(r.get("epoch")) for r in rows]
    index = next((i for i, e in enumerate(epochs) if e >= float(tpt_epoch)), None)
    if index is None:
        return None, f"no measurement at or after the TPT epoch {tpt_epoch:g}"
    return index, ""


def _after_tpt(rows: Sequence[Mapping[str, Any]], tpt_row: int | None, tpt_note: str) -> str:
    """Why a TPT-to-last comparison cannot be made ("" when it can)."""
    if tpt_row is None:
        return tpt_note
    if tpt_row == len(rows) - 1:
        epoch = _epoch_text(rows[tpt_row])
        return f"the TPT (epoch {epoch}) is the last measurement: nothing after it"
    return ""


#: a scale-free metric this close to 0 at both ends is at its collapsed value, not "did not fall"
_AT_ZERO = 1e-12


def _fall_claim(first: Mapping[str, Any], last: Mapping[str, Any]) -> dict[str, Any]:
    fell, stayed, undefined = [], [], []
    for name in _FALL_METRICS:
        a, b = _number(first.get(name)), _number(last.get(name))
        if math.isnan(a) or math.isnan(b):
            undefined.append(name)
        elif b < a or (name == "nc4" and b <= a) or max(abs(a), abs(b)) <= _AT_ZERO:
            fell.append(name)  # a metric at 0 throughout (e.g. equinorm of C = 2 means) held
        else:
            stayed.append(name)
    total = len(_FALL_METRICS)
    if undefined:
        note = "undefined (NaN) first or last: " + ", ".join(undefined)
        return _claim("nc2_nc3_nc4_fall", math.nan, float(total), "==", note=note)
    note = "did not fall: " + ", ".join(stayed) if stayed else "all fell"
    return _claim("nc2_nc3_nc4_fall", len(fell), total, "==", note=note)


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------


def outcome_of(claim):
    if claim.get("holds") is True:
        return "holds"
    if claim.get("holds") is False:
        return "fails"
    reason = claim.get("reason") or claim.get("note") or ""
    return "not applicable" if reason.startswith("not applicable") else "inconclusive"


def tally(claims: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Claim ids by verdict: ``{"hold": [...], "fail": [...], "not_applicable": [...]}``."""
    out: dict[str, list[str]] = {"hold": [], "fail": [], "not_applicable": []}
    for claim in claims:
        holds = claim.get("holds")
        key = "not_applicable" if holds is None else ("hold" if holds else "fail")
        out[key].append(str(claim.get("id")))
    return out


def format_tally(claims: Iterable[Mapping[str, Any]], *, report: Any = None) -> str:
    """One console line: ``claims: 6/8 hold; failing: a, b; not applicable: c; report: PATH``.

    The count is over the claims that could be decided (true or false).
    """
    t = tally(claims)
    decided = len(t["hold"]) + len(t["fail"])
    parts = [f"claims: {len(t['hold'])}/{decided} hold"]
    if t["fail"]:
        parts.append("failing: " + ", ".join(t["fail"]))
    if t["not_applicable"]:
        parts.append("not applicable: " + ", ".join(t["not_applicable"]))
    if report is not None:
        parts.append(f"report: {report}")
    return "; ".join(parts)


def claim_columns(claims: Iterable[Mapping[str, Any]] | None) -> dict[str, bool | None]:
    """``{"claim_<id>": holds}`` for every id of :data:`CLAIM_IDS` (None when absent)."""
    by_id = {str(c.get("id")): c.get("holds") for c in claims or ()}
    return {f"claim_{cid}": by_id.get(cid) for cid in CLAIM_IDS}


# --------------------------------------------------------------------------------------------
# claim 4: MSE vs CE
# --------------------------------------------------------------------------------------------


def accuracy_gaps(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pair MSE and CE runs of the same dataset, network and seed (SPEC §7 claim 4).

    Parameters
    ----------
    runs : iterable of mapping
        One record per run with ``name``, ``dataset``, ``model``, ``seed``, ``loss`` and
        ``test_accuracy`` (final, a fraction in [0, 1]; None when not measured). Runs of other
        losses (e.g. rescaled MSE) are not paired.

    Returns
    -------
    list of dict
        One entry per (dataset, model, seed) that has an MSE or a CE run:
        ``{"dataset", "model", "seed", "mse_run", "ce_run", "mse_test_accuracy",
        "ce_test_accuracy", "value", "threshold", "holds", "note"}`` with ``value`` = test
        accuracy(MSE) − test accuracy(CE) in percentage points, ``holds`` = |value| ≤ 1 point, and
        ``holds`` None (with the reason in ``note``) when the partner is missing, a test accuracy
        is unknown, or several runs of one loss share the key (e.g. an lr grid: select the lr
        first). Sorted by dataset, model, seed.
    """
    groups: dict[tuple[str, str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for run in runs:
        kind = loss_kind(run.get("loss"))
        if kind not in ("mse", "ce"):
            continue
        key = tuple(str(run.get(k)) for k in ("dataset", "model", "seed"))
        groups.setdefault(key, {"mse": [], "ce": []})[kind].append(run)  # type: ignore[index]
    out = []
    for (dataset, model, seed), by_loss in sorted(groups.items()):
        mse, ce = by_loss["mse"], by_loss["ce"]
        entry: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "seed": seed,
            "mse_run": _names(mse),
            "ce_run": _names(ce),
            "mse_test_accuracy": None,
            "ce_test_accuracy": None,
            "value": None,
            "threshold": GAP_THRESHOLD_PP,
            "holds": None,
            "note": "",
        }
        if len(mse) != 1 or len(ce) != 1:
            if not mse or not ce:
                entry["note"] = f"no {'CE' if mse else 'MSE'} run with the same dataset/model/seed"
            else:
                entry["note"] = (
                    f"{len(mse)} MSE and {len(ce)} CE runs share dataset/model/seed (different "
                    "lr or weight decay?): not paired"
                )
            out.append(entry)
            continue
        a, b = _number(mse[0].get("test_accuracy")), _number(ce[0].get("test_accuracy"))
        entry["mse_test_accuracy"] = None if math.isnan(a) else a
        entry["ce_test_accuracy"] = None if math.isnan(b) else b
        if math.isnan(a) or math.isnan(b):
            entry["note"] = "test accuracy not measured (measure_test) in one of the runs"
        else:
            gap = 100.0 * (a - b)
            entry["value"] = gap
            # accuracies are fractions k/N: a gap of exactly 1 point must not fail on rounding
            entry["holds"] = bool(abs(gap) <= GAP_THRESHOLD_PP * (1.0 + 1e-12))
        out.append(entry)
    return out


def _names(runs: Sequence[Mapping[str, Any]]) -> str | None:
    if not runs:
        return None
    return ", ".join(str(r.get("name")) for r in runs)
