"""The paper's claims and the central-path fit in reports (SPEC §7 verdicts, SPEC §9).

A run's verdicts come from its ``summary.json`` (``claims``, ``central_path_fit``) when the run
recorded them; older runs get them computed here from their metrics file with the same functions
(:mod:`ncmse.claims`, :mod:`ncmse.central_path`), and the page says which source it used.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize

from ncmse.central_path import LAW_SHORT, LAW_TITLES, fitted_omega, omega_table
from ncmse.claims import (
    CLAIM_IDS,
    GAP_THRESHOLD_PP,
    accuracy_gaps,
    holds_when,
    tally,
    tpt_epoch_of,
)
from ncmse.report.html import format_value, relative_link, table
from ncmse.report.style import TPT_COLOUR, FigureFile, colour, new_figure, save_figure, set_log_y
from ncmse.verdicts import (
    SOURCE_SUMMARY,
    run_claims,
    run_rows,
)

__all__ = [
    "CLAIM_FIGURES",
    "accuracy_gap_csv",
    "accuracy_gap_section",
    "central_path_section",
    "claims_section",
    "final_test_accuracy",
    "plot_central_path",
    "run_gap_records",
    "verdicts_csv",
    "verdicts_section",
]

#: claim id → names of the run-report figures that show it (first one is linked first)
CLAIM_FIGURES: dict[str, tuple[str, ...]] = {
    "identity": ("loss_decomposition",),
    "tpt_reached": ("error",),
    "perp_small": ("loss_decomposition",),
    "perp_falls": ("loss_decomposition",),
    "nc1_falls": ("nc1",),
    "nc1_falls_after_tpt": ("nc1",),
    "nc2_nc3_nc4_fall": ("equinorm", "equiangular", "maxangle", "nc3", "nc4"),
    "snr_equalises": ("snr", "central_path"),
}
_RELATION_TEXT = {"<=": "≤", "<": "<", ">=": "≥", ">": ">", "==": "=", "not null": ""}
_VERDICT = {True: "holds", False: "fails", None: "n/a"}
_MARK = {True: "✓", False: "✗", None: "—"}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def final_test_accuracy(run: Any) -> float | None:
    """Last finite ``test_accuracy`` of the metrics file, else summary.json ``final``."""
    values = run.columns.get("test_accuracy")
    if values is not None:
        finite = values[np.isfinite(values)]
        if finite.size:
            return float(finite[-1])
    value = run.final().get("test_accuracy")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def run_gap_records(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """:func:`ncmse.claims.accuracy_gaps` of the finished ones of loaded runs (named by their
    directory): a diverged or interrupted run's accuracy is not the method's, and the sweep
    table pairs finished runs only."""
    records = [
        {
            "name": run.path.name,
            "dataset": run.describe("dataset"),
            "model": run.describe("model"),
            "seed": run.describe("seed"),
            "loss": run.describe("loss"),
            "test_accuracy": final_test_accuracy(run),
        }
        for run in runs
        if run.summary.get("status") == "finished"
    ]
    return accuracy_gaps(records)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def _threshold_text(claim: Mapping[str, Any]) -> str:
    if "relation" not in claim and holds_when(str(claim.get("id"))):
        return holds_when(str(claim.get("id")))
    relation = str(claim.get("relation", ""))
    threshold = claim.get("threshold")
    if relation == "not null":
        return "not null"
    if relation == "==" and claim.get("id") == "nc2_nc3_nc4_fall":
        return "all 5"
    text = _RELATION_TEXT.get(relation, relation)
    return f"{text} {format_value(threshold)}".strip()


def _value_text(value: Any) -> str:
    if isinstance(value, float) and (abs(value) >= 1e4 or 0 < abs(value) < 1e-3):
        return f"{value:.3g}"
    return format_value(value)


def claims_section(
    claims: Sequence[Mapping[str, Any]], source: str, figure_names: Collection[str] = ()
) -> str:
    """The *Claims* table of a run report: value, threshold, verdict and the figures to look at.

    Parameters
    ----------
    claims : sequence of mapping
        The run's claims (:func:`ncmse.claims.evaluate_claims`).
    source : str
        Where they came from (shown under the heading).
    figure_names : collection of str
        Names of the figures on the page (their anchors are ``#fig-<name>``).
    """
    t = tally(claims)
    decided = len(t["hold"]) + len(t["fail"])
    lead = f"<strong>{len(t['hold'])} of {decided}</strong> decidable claims hold"
    if t["fail"]:
        lead += "; failing: " + ", ".join(f"<code>{html.escape(i)}</code>" for i in t["fail"])
    if t["not_applicable"]:
        lead += "; not applicable: " + ", ".join(
            f"<code>{html.escape(i)}</code>" for i in t["not_applicable"]
        )
    rows = []
    for claim in claims:
        cid = str(claim.get("id"))
        holds = claim.get("holds")
        links = [
            f'<a href="#fig-{html.escape(n, quote=True)}">{html.escape(n)}</a>'
            for n in CLAIM_FIGURES.get(cid, ())
            if n in figure_names
        ]
        css = {True: "ok", False: "bad", None: "na"}[holds]
        rows.append(
            [
                f"<code>{html.escape(cid)}</code>",
                html.escape(str(claim.get("statement", ""))),
                html.escape(_value_text(claim.get("value"))),
                html.escape(_threshold_text(claim)),
                f'<span class="verdict {css}">{_MARK[holds]} {_VERDICT[holds]}</span>',
                html.escape(str(claim.get("reason") or claim.get("note") or "")),
                " · ".join(links) or "—",
            ]
        )
    headers = ("id", "claim (SPEC §7)", "value", "holds when", "verdict", "note", "figure")
    return (
        '<h2 id="claims">Claims</h2>\n'
        f"<p>{lead}. Training-split measurements; “first”, “TPT” and “last” are the first "
        "measurement, the first at or after the TPT epoch, and the last. "
        f'<span class="note">Source: {html.escape(source)}.</span></p>\n'
        + table(headers, rows, raw=True)
    )


def central_path_section(fits: Sequence[Mapping[str, Any]], source: str, figure: str = "") -> str:
    """The *Central path* section: κ and residual per law, the reason where there is no fit."""
    rows = []
    for fit in fits:
        name = str(fit.get("law"))
        kappa = fit.get("kappa")
        n = fit.get("n")
        per_n = kappa / n if kappa is not None and isinstance(n, (int, float)) and n else None
        rows.append(
            [
                LAW_TITLES.get(name, name),
                fit.get("n"),
                fit.get("C"),
                fit.get("e0"),
                _value_text(kappa) if kappa is not None else "—",
                _value_text(per_n) if per_n is not None else "—",
                fit.get("rms_log_residual"),
                fit.get("rms_log_residual_kappa0"),
                fit.get("points"),
                fit.get("reason") or "",
            ]
        )
    headers = (
        "law",
        "n",
        "C",
        "e0 (TPT measurement)",
        "κ (flow time per epoch)",
        "κ / n",
        "rms log residual",
        "rms log residual at κ = 0",
        "points",
        "no fit because",
    )
    return (
        '<h2 id="central-path">Central path</h2>\n'
        "<p>SPEC §9: from the first measurement at or after TPT (epoch e0), the measured ω_j are "
        "compared with the closed-form ω dynamics of the unconstrained features model, "
        "ω_j(e) ≈ law.omega(κ·(e − e0), ω(e0)), with one time scale κ per law fitted by least "
        "squares on log ω over all j and e > e0. The residual says how well a single time scale "
        "describes the run (a learning-rate drop changes SGD's time scale); “at κ = 0” is the "
        "residual of ω frozen at ω(e0). Every coefficient of a law is proportional to n, so κ/n "
        "compares runs of different sizes. "
        f'<span class="note">Source: {html.escape(source)}.</span></p>\n'
        + table(headers, rows)
        + (figure or "")
    )


def verdicts_section(runs: Sequence[Any], out: Path) -> str:
    """Multi-run table: one row per training run, one column per claim (✓ holds, ✗ fails)."""
    rows = []
    for run in runs:
        claims, source = run_claims(run)
        by_id = {str(c.get("id")): c for c in claims}
        report = run.path / "report.html"
        name = (
            relative_link(report, out, run.path.name)
            if report.is_file()
            else html.escape(run.path.name)
        )
        cells = []
        for cid in CLAIM_IDS:
            claim = by_id.get(cid, {})
            holds = claim.get("holds")
            reason = claim.get("reason") or claim.get("note") or ""
            title = html.escape(f"{_value_text(claim.get('value'))} — {reason}")
            css = {True: "ok", False: "bad", None: "na"}[holds]
            cells.append(f'<span class="verdict {css}" title="{title}">{_MARK[holds]}</span>')
        t = tally(claims)
        count = f"{len(t['hold'])}/{len(t['hold']) + len(t['fail'])}"
        computed = "" if source == SOURCE_SUMMARY else " *"
        rows.append([name, html.escape(run.describe("loss") or "—"), *cells, count + computed])
    headers = ["run", "loss", *CLAIM_IDS, "hold"]
    return (
        '<h2 id="claims">Claims per run</h2>\n'
        "<p>SPEC §7 verdicts on each run's training-split measurements: ✓ holds, ✗ fails, — not "
        "applicable (L_⊥ claims on cross-entropy runs, post-TPT claims without TPT) or undefined. "
        "Hover a mark for its value; each run's report has the table with values and "
        "thresholds. * computed by this report from the metrics file (the run did not record "
        "them).</p>\n" + table(headers, rows, raw=True)
    )


def accuracy_gap_section(gaps: Sequence[Mapping[str, Any]]) -> str:
    """Claim 4: MSE − CE test accuracy per dataset/model/seed, with its verdict."""
    if not gaps:
        return (
            '<h2 id="accuracy-gap">MSE − CE test accuracy (claim 4)</h2>\n'
            '<p class="note">No MSE or cross-entropy run to pair.</p>'
        )
    rows = []
    for g in gaps:
        holds = g.get("holds")
        rows.append(
            [
                g.get("dataset"),
                g.get("model"),
                g.get("seed"),
                g.get("mse_run") or "—",
                g.get("ce_run") or "—",
                _pct(g.get("mse_test_accuracy")),
                _pct(g.get("ce_test_accuracy")),
                "—" if g.get("value") is None else f"{g['value']:+.2f}",
                f"{_MARK[holds]} {_VERDICT[holds]}",
                g.get("note") or "",
            ]
        )
    decided = [g for g in gaps if g.get("holds") is not None]
    held = sum(bool(g["holds"]) for g in decided)
    headers = (
        "dataset",
        "model",
        "seed",
        "MSE run",
        "CE run",
        "MSE test acc.",
        "CE test acc.",
        "gap (points)",
        "verdict",
        "note",
    )
    return (
        '<h2 id="accuracy-gap">MSE − CE test accuracy (claim 4)</h2>\n'
        f"<p>MSE and cross-entropy runs of the same dataset, network and seed are paired; the gap "
        f"holds when |MSE − CE| ≤ {GAP_THRESHOLD_PP:g} percentage point. <strong>{held} of "
        f"{len(decided)}</strong> pairs hold.</p>\n" + table(headers, rows)
    )


def _pct(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return f"{100 * value:.2f} %"


def verdicts_csv(runs: Sequence[Any]) -> str:
    """CSV: run, loss and ``claim_<id>`` (true/false/empty) per run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "loss", *(f"claim_{cid}" for cid in CLAIM_IDS)])
    for run in runs:
        by_id = {str(c.get("id")): c.get("holds") for c in run_claims(run)[0]}
        cells = ["" if by_id.get(c) is None else str(by_id[c]).lower() for c in CLAIM_IDS]
        writer.writerow([run.path.name, run.describe("loss") or "", *cells])
    return buffer.getvalue()


def accuracy_gap_csv(gaps: Sequence[Mapping[str, Any]]) -> str:
    """CSV of :func:`ncmse.claims.accuracy_gaps` entries (gap in percentage points)."""
    buffer = io.StringIO()
    columns = ["dataset", "model", "seed", "mse_run", "ce_run", "mse_test_accuracy",
               "ce_test_accuracy", "value", "threshold", "holds", "note"]  # fmt: skip
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c if c != "value" else "accuracy_gap_pp" for c in columns])
    for g in gaps:
        cells = []
        for c in columns:
            v = g.get(c)
            cells.append("" if v is None else (str(v).lower() if isinstance(v, bool) else v))
        writer.writerow(cells)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------------


def plot_central_path(
    run: Any,
    fits: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    formats: Sequence[str] = ("png", "svg"),
) -> list[FigureFile]:
    """Measured vs fitted ω_j(epoch) per law and ω_max/ω_min, TPT marked (SPEC §9).

    One panel per law (measured ω_j as markers, the law's ω_j from e0 on as lines of the same
    colour) and a panel of ω_max/ω_min measured and predicted by each law. Returns no figure
    when the run has no ω measured.
    """
    rows = run_rows(run)
    epochs, omega = omega_table(rows)
    keep = np.isfinite(epochs) & np.any(np.isfinite(omega), axis=1) if omega.size else None
    if keep is None or not keep.any():
        return []
    epochs, omega = epochs[keep], omega[keep]
    k = omega.shape[1]
    cmap, norm = colormaps["viridis"], Normalize(0, max(k - 1, 1))
    tpt = run.tpt_epoch if "tpt_epoch" in run.summary else tpt_epoch_of(rows)
    fig, axes = new_figure(ncols=len(fits) + 1, width=4.6, height=3.8, suptitle=True)
    ratio_ax = axes[0, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        measured_ratio = np.max(omega, axis=1) / np.min(omega, axis=1)
    ratio_ax.plot(epochs, measured_ratio, "o", color="black", markersize=3, label="measured")
    for index, fit in enumerate(fits):
        ax = axes[0, index]
        for j in range(k):
            y = np.where(omega[:, j] > 0, omega[:, j], np.nan)
            ax.plot(epochs, y, "o", markersize=2.5, color=cmap(norm(j)), alpha=0.85,
                    label=f"ω_{j + 1} measured" if k <= 4 else None)  # fmt: skip
        name = str(fit.get("law"))
        title = f"{LAW_SHORT.get(name, name)}: " + (
            f"κ = {fit['kappa']:.3g}, rms = {fit['rms_log_residual']:.2g}"
            if fit.get("kappa") is not None
            else "no fit"
        )
        if fit.get("kappa") is not None:
            start = int(np.nonzero(epochs >= float(fit["e0"]))[0][0])
            dense = np.unique(np.r_[np.linspace(epochs[start], epochs[-1], 200), epochs[start:]])
            pred = fitted_omega(fit, dense, omega[start])
            for j in range(k):
                ax.plot(dense, pred[:, j], "-", lw=1.2, color=cmap(norm(j)))
            ax.plot([], [], "-", color="grey", label="law, fitted κ")
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.max(pred, axis=1) / np.min(pred, axis=1)
            ratio_ax.plot(
                dense,
                ratio,
                "-",
                color=colour(index),
                lw=1.5,
                label=f"{LAW_SHORT.get(name, name)} law",
            )
        else:
            ax.text(0.03, 0.03, _wrap(str(fit.get("reason") or "")), transform=ax.transAxes,
                    fontsize="x-small", color=TPT_COLOUR, va="bottom")  # fmt: skip
        _finish(ax, tpt, title=title, ylabel="ω_j (log scale)")
    _finish(ratio_ax, tpt, title="ω_max / ω_min: measured vs laws", ylabel="ω_max / ω_min")
    ratio_ax.axhline(1.0, color="black", lw=0.8, alpha=0.5)
    fig.suptitle(f"Central path (SPEC §9) — {run.label}")
    caption = (
        "Measured SNR singular values ω_j (markers) and the closed-form ω dynamics of the "
        "unconstrained features model started from the measured ω at the TPT measurement with "
        "one fitted time scale κ (lines), for the projected flow (SPEC §5.3) and "
        "step-then-renormalise (SPEC §5.4); right: ω_max/ω_min, which the laws take to 1."
    )
    return [
        save_figure(
            fig,
            out_dir,
            "central_path",
            title="Central path: measured vs fitted ω",
            caption=caption,
            formats=formats,
        )  # fmt: skip
    ]


def _wrap(text: str, width: int = 48) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line] if line else lines)


def _finish(ax: Any, tpt: float | None, *, title: str, ylabel: str) -> None:
    if any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any() for line in ax.lines):
        set_log_y(ax)
    if tpt is not None:
        ax.axvline(tpt, color=TPT_COLOUR, ls=":", lw=1.4, label=f"TPT (epoch {tpt:g})")
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small", loc="best")
