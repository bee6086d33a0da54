"""What a training run records about the paper's claims: SPEC §7 verdicts and the SPEC §9 fit.

:func:`run_verdicts` is called by the training loop when a run ends (and again on resume), and by
``ncmse measure``; it reads only the run's measurement rows, so it can be re-evaluated from
``metrics.jsonl`` at any time. :func:`end_of_run_lines` is what the console prints last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ncmse.central_path import LAW_SHORT, fit_central_path
from ncmse.claims import evaluate_claims, format_tally

__all__ = ["end_of_run_lines", "run_verdicts"]


def run_verdicts(
    rows: Sequence[Mapping[str, Any]], *, loss: str | None, tpt_epoch: float | None
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
    """
    return {
        "claims": evaluate_claims(rows, loss=loss, tpt_epoch=tpt_epoch),
        "central_path_fit": fit_central_path(rows, tpt_epoch=tpt_epoch),
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
    if fits:
        texts = []
        for fit in fits:
            name = LAW_SHORT.get(str(fit.get("law")), str(fit.get("law")))
            if fit.get("kappa") is None:
                texts.append(f"{name}: no fit ({fit.get('reason')})")
            else:
                texts.append(
                    f"{name}: κ = {fit['kappa']:.4g}, rms log residual "
                    f"{fit['rms_log_residual']:.3g}"
                )
        if all(f.get("kappa") is None for f in fits) and len({f.get("reason") for f in fits}) == 1:
            texts = [f"no fit ({fits[0].get('reason')})"]
        lines.append("central path (SPEC §9): " + "; ".join(texts))
    claims = summary.get("claims")
    if claims:
        lines.append(format_tally(claims, report=report))
    elif report is not None:
        lines.append(f"report: {report}")
    return lines
