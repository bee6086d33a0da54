"""What a training run records about the paper's claims: SPEC §7 verdicts and the SPEC §9 fit.

:func:`run_verdicts` is called by the training loop when a run ends (and again on resume), and by
``ncmse measure``; it reads only the run's measurement rows, so it can be re-evaluated from
``metrics.jsonl`` at any time. :func:`end_of_run_lines` is what the console prints last.
:func:`run_claims` and :func:`run_central_path` give a loaded run's verdicts: the recorded ones, or
(for a run that predates them) computed from its rows — used by the report and the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ncmse.rundir.reader import Run
from ncmse.verdicts.central_path import describe_fit, fit_central_path, is_current_fit
from ncmse.verdicts.claims import claims_are_current, evaluate_claims, format_tally, tpt_epoch_of

__all__ = [
    "SOURCE_COMPUTED",
    "SOURCE_SUMMARY",
    "end_of_run_lines",
    "run_central_path",
    "run_claims",
    "run_rows",
    "run_verdicts",
]

#: where a run's verdicts came from (named on report pages)
SOURCE_SUMMARY = "recorded in summary.json by the run"
SOURCE_COMPUTED = (
    "computed by the report from the metrics file (the run did not record them, or recorded "
    "them under older rules)"
)


def run_rows(run: Run) -> list[dict[str, Any]]:
    """The measurement rows of a loaded :class:`~ncmse.rundir.reader.Run` (``snr`` as ``snr_j``
    columns, NaN for empty cells, text columns as text)."""
    rows: list[dict[str, Any]] = [{} for _ in range(run.num_rows)]
    for name, values in run.columns.items():
        for row, value in zip(rows, values):
            row[name] = float(value)
    for name, values in run.text_columns.items():
        for row, value in zip(rows, values):
            row[name] = value
    return rows


def _summary_tpt(run: Run, rows: Sequence[Mapping[str, Any]]) -> float | None:
    if "tpt_epoch" in run.summary:
        return run.tpt_epoch
    return tpt_epoch_of(rows)


def run_claims(run: Run) -> tuple[list[dict[str, Any]], str]:
    """The run's claims and where they came from (:data:`SOURCE_SUMMARY` or computed).

    Recorded claims of an older version (:func:`ncmse.verdicts.claims.claims_are_current` false) are
    stale: they are re-evaluated from the run's rows.
    """
    recorded = run.summary.get("claims")
    if claims_are_current(recorded):
        return [dict(c) for c in recorded], SOURCE_SUMMARY
    rows = run_rows(run)
    claims = evaluate_claims(
        rows,
        loss=run.describe("loss"),
        tpt_epoch=_summary_tpt(run, rows),
        lam_exact=run.summary.get("lam_exact", True) is not False,
    )
    return claims, SOURCE_COMPUTED


def run_central_path(run: Run) -> tuple[list[dict[str, Any]], str]:
    """The run's central-path fits (one record per law) and where they came from.

    Records of an older version (fitted on epochs, no ``clock``) are stale: the fit is redone
    on the flow-time clock, τ from the rows or reconstructed from the run's config.
    """
    recorded = run.summary.get("central_path_fit")
    if is_current_fit(recorded):
        return [dict(c) for c in recorded], SOURCE_SUMMARY
    rows = run_rows(run)
    fits = fit_central_path(rows, tpt_epoch=_summary_tpt(run, rows), config=run.config)
    return fits, SOURCE_COMPUTED


def run_verdicts(
    rows: Sequence[Mapping[str, Any]],
    *,
    loss: str | None,
    tpt_epoch: float | None,
    lam_exact: bool = True,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"claims": [...], "central_path_fit": [...]}`` of a run's training-split rows.

    Parameters
    ----------
    rows : sequence of mapping
        Every measurement row of the run, in order (``test_*`` keys are ignored).
    loss : str or None
        The loss the run trained with (``mse``, ``ce``, ``rescaled_mse``).
    tpt_epoch : float or None
        First measured epoch with zero training error (None: never).
    lam_exact : bool
        Whether the decomposition is exact for the run's objective (see evaluate_claims).
    config : mapping, optional
        The run's config: its learning-rate schedule (the drops, and τ for rows without
        ``flow_time``) for the central-path fit.
    """
    return {
        "claims": evaluate_claims(rows, loss=loss, tpt_epoch=tpt_epoch, lam_exact=lam_exact),
        "central_path_fit": fit_central_path(rows, tpt_epoch=tpt_epoch, config=config),
    }


def end_of_run_lines(summary: Mapping[str, Any], report: Any = None) -> list[str]:
    """The last console lines of a run: final values, the central-path fit, the claims tally.

    Parameters
    ----------
    summary : mapping
        The run's ``summary.json`` content.
    report : path, optional
        ``report.html`` when one was written (named on the tally line).
    """
    final = summary.get("final") or {}
    parts = []
    for key, label in (
        ("train_error", "train_error"),
        ("test_accuracy", "test_accuracy"),
        ("objective", "objective"),
        ("loss", "loss"),
        ("nc1", "nc1"),
        ("loss_perp_ratio", "L_perp/L"),
    ):
        value = final.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{label} {value:.4g}")
    parts.append(f"tpt_epoch {summary.get('tpt_epoch')}")
    if summary.get("lam") is not None:
        parts.append(f"lam {summary['lam']:g}")
    lines = [f"final (epoch {final.get('epoch', '?')}): " + ", ".join(parts)]
    fits = summary.get("central_path_fit") or []
    if (
        fits
        and all(f.get("kappa") is None for f in fits)
        and len({(f.get("reason"), f.get("follows")) for f in fits}) == 1
    ):
        verdict = "does not follow" if fits[0].get("follows") is False else "no fit"
        lines.append(f"central path (SPEC §9): {verdict} — {fits[0].get('reason')}")
    else:
        lines.extend(describe_fit(fit) for fit in fits)
    claims = summary.get("claims")
    if claims:
        lines.append(format_tally(claims, report=report))
    elif report is not None:
        lines.append(f"report: {report}")
    return lines
