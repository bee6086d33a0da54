"""The paper's claims and the central-path fit in reports (SPEC §7 verdicts, SPEC §9).

A run's verdicts come from its ``summary.json`` (``claims``, ``central_path_fit``) when the run
recorded them in the current format; older runs get them computed here from their metrics file
with the same functions (:mod:`ncmse.verdicts.claims`, :mod:`ncmse.verdicts.central_path`), and the
page says which
source it used. Every claim is shown with one of four outcomes in words — holds, fails,
inconclusive, not applicable (:func:`ncmse.verdicts.claims.outcome_of`) — each with its own mark and
colour, so an undecided claim never reads as a confirmation. Several runs are paired and grouped
by :mod:`ncmse.verdicts.pairing` (MSE ↔ CE pairs, seed groups, claim 4 over seeds).
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

from ncmse.report.central_path_figure import plot_central_path
from ncmse.report.html import format_value, relative_link, table
from ncmse.rundir.format import number, table_cell
from ncmse.rundir.numfmt import sig3
from ncmse.verdicts.central_path import (
    FOLLOWS_MAX_RMS,
    LAW_SHORT,
    LAW_TITLES,
    verdict_word,
)
from ncmse.verdicts.claims import CLAIM_IDS, outcome_of
from ncmse.verdicts.pairing import (
    GAP_THRESHOLD_PP,
    OUTCOMES,
    Pairing,
    RunEntry,
    current_claims,
    distinct_labels,
    pair_runs,
    seed_groups,
)

__all__ = [
    "CLAIM_FIGURES",
    "accuracy_gap_csv",
    "accuracy_gap_section",
    "central_path_section",
    "claim_groups_section",
    "claims_section",
    "comparison_verdicts",
    "final_test_accuracy",
    "outcome_html",
    "plot_central_path",
    "run_entries",
    "summary_section",
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
    "snr_grows": ("snr",),
    "snr_equalises": ("snr", "central_path"),
}
_RELATION_TEXT = {"<=": "≤", "<": "<", ">=": "≥", ">": ">", "==": "=", "not null": ""}
#: how each claim's value is compared with its threshold (SPEC §7 table); others: ≥
_HOLDS_WHEN = {"identity": "≤", "perp_small": "≤", "tpt_reached": "not null"}
#: mark and CSS class of each outcome: four distinct looks, a tick only for "holds"
_MARK = {"holds": "✓", "fails": "✗", "inconclusive": "?", "not applicable": "–"}
_CSS = {"holds": "ok", "fails": "bad", "inconclusive": "unsure", "not applicable": "na"}
_MEANING = (
    "A claim <strong>holds</strong> only when its value passes the size threshold by more than "
    "3 σ of the run's own measurement noise (σ: scatter of the series in log); it "
    "<strong>fails</strong> when it misses by more than that. <strong>Inconclusive</strong> "
    "means this run cannot decide the claim (within noise of the threshold, or undefined): it "
    "is not evidence for the paper. <strong>Not applicable</strong>: the claim does not concern "
    "this run (e.g. the L_⊥ claims on a cross-entropy run)."
)


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
    value = number(run.final().get("test_accuracy"))
    return value if math.isfinite(value) else None


def run_entries(runs: Sequence[Any]) -> list[RunEntry]:
    """:class:`ncmse.verdicts.pairing.RunEntry` of loaded runs, named by the shortest distinct path
    suffix of their directories (``a/base`` and ``b/base`` stay apart)."""
    labels = distinct_labels([run.path for run in runs])
    entries = []
    for run, label in zip(runs, labels):
        claims, _ = current_claims(run)
        entries.append(
            RunEntry(
                name=label,
                loss=run.describe("loss"),
                config=run.config or None,
                status=run.summary.get("status"),
                test_accuracy=final_test_accuracy(run),
                claims=tuple(claims),
                describe={k: run.describe(k) for k in ("dataset", "model", "seed")},
            )
        )
    return entries


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def outcome_html(outcome: str, title: str = "", *, word: bool = True) -> str:
    """A verdict span: its mark, and the outcome in words unless ``word`` is false."""
    attr = f' title="{html.escape(title, quote=True)}"' if title else ""
    text = f"{_MARK[outcome]} {outcome}" if word else _MARK[outcome]
    return f'<span class="verdict {_CSS[outcome]}"{attr}>{html.escape(text)}</span>'


def _threshold_text(claim: Mapping[str, Any]) -> str:
    cid = str(claim.get("id"))
    threshold = claim.get("threshold")
    relation = claim.get("relation")
    text = _RELATION_TEXT.get(str(relation), str(relation)) if relation else _HOLDS_WHEN.get(
        cid, "≥"
    )  # fmt: skip
    if relation == "not null" or text == "not null":
        return "not null"
    if cid == "nc2_nc3_nc4_fall" and threshold is not None:
        return f"all {format_value(threshold)} that apply"
    return f"{text} {format_value(threshold)}".strip()


def _value_text(value: Any) -> str:
    if isinstance(value, float) and (abs(value) >= 1e4 or 0 < abs(value) < 1e-3):
        return f"{value:.3g}"
    return format_value(value)


def _reason(claim: Mapping[str, Any]) -> str:
    return str(claim.get("reason") or claim.get("note") or "")


def _by_outcome(claims: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {o: [] for o in OUTCOMES}
    for claim in claims:
        out[outcome_of(claim)].append(str(claim.get("id")))
    return out


def _lead(claims: Sequence[Mapping[str, Any]]) -> str:
    """``3 hold, 2 fail (a, b), 1 inconclusive (c), 2 not applicable (d, e)`` as HTML."""
    parts = []
    for outcome, ids in _by_outcome(claims).items():
        if not ids and outcome != "holds":
            continue
        verb = {"holds": "hold", "fails": "fail"}.get(outcome, outcome)
        named = "" if outcome == "holds" else " (" + ", ".join(
            f"<code>{html.escape(i)}</code>" for i in ids
        ) + ")"  # fmt: skip
        parts.append(f'<span class="verdict {_CSS[outcome]}">{len(ids)} {verb}</span>{named}')
    return ", ".join(parts)


def claims_section(
    claims: Sequence[Mapping[str, Any]], source: str, figure_names: Collection[str] = ()
) -> str:
    """The verdicts that open a run report: each claim's outcome in words, value, threshold,
    noise and reason, and the figures to look at.

    Parameters
    ----------
    claims : sequence of mapping
        The run's claim records (SPEC §7; :func:`ncmse.verdicts.claims.evaluate_claims`).
    source : str
        Where they came from (shown under the heading).
    figure_names : collection of str
        Names of the figures on the page (their anchors are ``#fig-<name>``).
    """
    rows = []
    for claim in claims:
        cid = str(claim.get("id"))
        links = [
            f'<a href="#fig-{html.escape(n, quote=True)}">{html.escape(n)}</a>'
            for n in CLAIM_FIGURES.get(cid, ())
            if n in figure_names
        ]
        rows.append(
            [
                f"<code>{html.escape(cid)}</code>",
                outcome_html(outcome_of(claim)),
                html.escape(str(claim.get("statement", ""))),
                html.escape(_value_text(claim.get("value"))),
                html.escape(_threshold_text(claim)),
                html.escape(_value_text(claim.get("noise"))),
                html.escape(_reason(claim)),
                " · ".join(links) or "—",
            ]
        )
    headers = ("id", "verdict", "claim (SPEC §7)", "value", "holds when", "noise σ (log)",
               "reason", "figure")  # fmt: skip
    return (
        '<h2 id="claims">Verdicts on the paper\'s claims</h2>\n'
        f'<p class="verdicts-lead">This run: {_lead(claims)}.</p>\n'
        f"<p>{_MEANING} Training-split measurements; “first”, “TPT” and “last” are the first "
        "measurement, the first at or after the TPT epoch, and the last. "
        f'<span class="note">Source: {html.escape(source)}.</span></p>\n'
        + table(headers, rows, raw=True)
    )


def summary_section(
    claims: Sequence[Mapping[str, Any]], fits: Sequence[Mapping[str, Any]], figure: str
) -> str:
    """The opening of a run report: the summary figure with the SPEC §7 verdict line beside it
    (the tally in words, each claim's outcome with its mark) and the SPEC §9 verdict per law.

    Parameters
    ----------
    claims : sequence of mapping
        The run's claim records.
    fits : sequence of mapping
        Its central-path records.
    figure : str
        The summary ``<figure>`` HTML (may be empty).
    """
    items = "".join(
        f"<li>{outcome_html(outcome_of(c), word=False)} <code>{html.escape(str(c.get('id')))}"
        f"</code> {html.escape(outcome_of(c))}</li>"
        for c in claims
    )
    laws = []
    for fit in fits:
        name = str(fit.get("law"))
        fitted = fit.get("kappa") is not None or fit.get("follows") is False
        word = verdict_word(fit) if fitted else "no fit"
        css = {True: "ok", False: "bad"}.get(fit.get("follows"), "na")
        laws.append(
            f'<li>{html.escape(LAW_SHORT.get(name, name))}: <span class="verdict {css}">'
            f"{html.escape(word)}</span></li>"
        )
    aside = (
        '<aside class="summary-verdicts">\n<h3>Verdicts (SPEC §7)</h3>\n'
        f'<p class="verdicts-lead">{_lead(claims) if claims else "no claim evaluated"}.</p>\n'
        f'<ul class="claim-list">{items}</ul>\n'
        + (
            f'<h3>Central path (SPEC §9)</h3>\n<ul class="claim-list">{"".join(laws)}</ul>\n'
            if laws
            else ""
        )  # fmt: skip
        + '<p class="note">Details: <a href="#claims">verdicts</a> · '
        '<a href="#central-path">central path</a>.</p>\n</aside>'
    )
    return (
        '<h2 id="summary">Run summary</h2>\n'
        f'<section class="summary">\n<div class="summary-figure">{figure}</div>\n{aside}\n'
        "</section>"
    )


def central_path_section(fits: Sequence[Mapping[str, Any]], source: str, figure: str = "") -> str:
    """The *Central path* section: the verdict per law in words, the residual as a factor, the
    κ = 0 baseline, the last ω_max/ω_min measured and predicted, and the reason."""
    verdicts, rows = [], []
    for fit in fits:
        name = str(fit.get("law"))
        kappa, n = fit.get("kappa"), fit.get("n")
        per_n = kappa / n if kappa is not None and isinstance(n, (int, float)) and n else None
        rms, rms0 = fit.get("rms_log_residual"), fit.get("rms_log_residual_frozen")
        word = verdict_word(fit) if kappa is not None or fit.get("follows") is False else "no fit"
        css = {True: "ok", False: "bad"}.get(fit.get("follows"), "na")
        verdicts.append(
            f'<li><strong>{html.escape(LAW_TITLES.get(name, name))}: <span class="verdict '
            f'{css}">{html.escape(word)}</span></strong>'
            + (
                f" — rms residual of ln ω {html.escape(_factor_text(rms))} against "
                f"{html.escape(_factor_text(rms0))} holding ω at their TPT values"
                if rms is not None and rms0 is not None
                else ""
            )
            + f". {html.escape(str(fit.get('reason') or ''))}</li>"
        )
        rows.append(
            [
                LAW_TITLES.get(name, name),
                word,
                fit.get("e0"),
                _value_text(kappa) if kappa is not None else "—",
                _value_text(per_n) if per_n is not None else "—",
                _factor_text(rms),
                _factor_text(rms0),
                _ratio_text(fit.get("ratio_last_measured")),
                _ratio_text(fit.get("ratio_last_predicted")),
                fit.get("points"),
            ]
        )
    headers = (
        "law",
        "verdict",
        "e0 (TPT measurement)",
        "κ (law time per unit of τ)",
        "κ / n",
        "rms residual of ln ω",
        "… holding ω fixed (κ = 0)",
        "last ω_max/ω_min measured",
        "… predicted",
        "points",
    )
    clocks = {str(f.get("clock_source")) for f in fits if f.get("clock_source")}
    clock = f" τ here: {'; '.join(sorted(clocks))}." if clocks else ""
    return (
        '<h2 id="central-path">Central path</h2>\n'
        "<p>SPEC §9: does the network follow the unconstrained features model's ω dynamics after "
        "TPT? Time is gradient-flow time τ = Σ learning rate over the optimiser steps (so a "
        "learning-rate drop slows it), not epochs. From the first measurement at or after TPT "
        "(epoch e0), ω_j(e) ≈ law.omega(κ·(τ(e) − τ(e0)), ω(e0)) with one time scale κ per law, "
        "fitted by least squares on ln ω over all j and e > e0. A law is followed when its rms "
        f"residual of ln ω is at most {FOLLOWS_MAX_RMS:g} (a factor "
        f"×{math.exp(FOLLOWS_MAX_RMS):.3f}) and at most half that of ω held at their TPT values. "
        "Residuals are shown as factors exp(rms) with the rms of the natural log in brackets."
        f"{html.escape(clock)} "
        f'<span class="note">Source: {html.escape(source)}.</span></p>\n'
        + ("<ul>" + "".join(verdicts) + "</ul>\n" if verdicts else "")
        + table(headers, rows)
        + (figure or "")
    )


def _factor_text(rms: Any) -> str:
    """``×2.32 (ln 0.84)``: an rms of ln ω as the factor it stands for; ``—`` when absent."""
    if not isinstance(rms, (int, float)) or isinstance(rms, bool) or not math.isfinite(rms):
        return "—"
    return f"×{math.exp(rms):#.3g} (natural log {rms:.3g})"


def _ratio_text(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return f"{value:#.3g}"


def verdicts_section(runs: Sequence[Any], entries: Sequence[RunEntry], out: Path) -> str:
    """Multi-run table: one row per training run, one mark per claim, the counts in words.

    Parameters
    ----------
    runs : sequence of Run
        The loaded runs (for links to their reports).
    entries : sequence of RunEntry
        :func:`run_entries` of ``runs`` (labels and claims), same order.
    out : Path
        Folder of the comparison page (links are relative to it).
    """
    rows = []
    for run, entry in zip(runs, entries):
        by_id = {str(c.get("id")): c for c in entry.claims}
        report = run.path / "report.html"
        name = (
            relative_link(report, out, entry.name) if report.is_file() else html.escape(entry.name)
        )
        cells = []
        for cid in CLAIM_IDS:
            claim = by_id.get(cid, {"id": cid, "reason": "no record"})
            outcome = outcome_of(claim)
            title = f"{cid}: {outcome}; value {_value_text(claim.get('value'))}; {_reason(claim)}"
            cells.append(outcome_html(outcome, title, word=False))
        counts = _by_outcome(list(by_id.values()))
        count = ", ".join(
            f"{len(counts[o])} {o}" for o in OUTCOMES if counts[o] or o in ("holds", "fails")
        )
        rows.append([name, html.escape(run.describe("loss") or "—"), *cells, html.escape(count)])
    headers = ["run", "loss", *CLAIM_IDS, "outcomes"]
    legend = " ".join(outcome_html(o) for o in OUTCOMES)
    return (
        '<h2 id="claims">Verdicts per run</h2>\n'
        f"<p>SPEC §7 verdicts on each run's training-split measurements: {legend}. Hover a mark "
        f"for its value and reason; each run's report has them in full. {_MEANING}</p>\n"
        + table(headers, rows, raw=True)
    )


def claim_groups_section(groups: Sequence[Mapping[str, Any]]) -> str:
    """Per group of runs that differ only by seed: each claim "holds in k of n", with the
    fails, inconclusive and not-applicable counts."""
    rows = []
    for group in groups:
        n = group["n"]
        cells = []
        for cid in CLAIM_IDS:
            c = group["claims"][cid]
            text = f"holds in {c['holds']} of {n}"
            rest = [f"{c[o]} {o}" for o in OUTCOMES[1:] if c[o]]
            cells.append(html.escape(text + (" (" + ", ".join(rest) + ")" if rest else "")))
        runs = ", ".join(group["runs"])
        rows.append([html.escape(str(group["group"])), html.escape(runs), str(n), *cells])
    headers = ["runs differing only by seed", "runs", "n", *CLAIM_IDS]
    return (
        '<h2 id="claims-by-group">Claims over seeds</h2>\n'
        "<p>Runs whose configurations (config.yaml) agree except the seed form a group; per "
        "claim, in how many of its n runs it holds (and how many fail, are inconclusive or do "
        "not apply). A claim is established over seeds only when it holds in all of them.</p>\n"
        + table(headers, rows, raw=True)
    )


def accuracy_gap_section(pairing: Pairing) -> str:
    """Claim 4: the MSE − CE test accuracy per pair, its mean and 95 % interval per group of
    paired seeds with the verdict, and the runs that could not be paired (with the reason)."""
    head = '<h2 id="accuracy-gap">MSE − CE test accuracy (claim 4)</h2>\n'
    rule = (
        "<p>An MSE run and a cross-entropy run are paired only when their whole configurations "
        "(config.yaml) agree except the loss keys (loss, mse_reduction, rescale_k, rescale_m, "
        "lam) and keys that change nothing trained (name, output and logging settings). Over the "
        "paired seeds of one configuration, claim 4 holds when the 95 % Student-t interval of "
        f"the mean gap lies within ±{GAP_THRESHOLD_PP:g} point, fails when it lies wholly "
        "outside, and is inconclusive otherwise (one pair has no interval).</p>\n"
    )
    parts = [head, rule]
    if pairing.groups:
        rows = []
        for g in pairing.groups:
            interval = g.get("interval")
            rows.append(
                [
                    html.escape(str(g["group"])),
                    str(g["n"]),
                    html.escape(_points(g.get("value"))),
                    html.escape(
                        "—" if interval is None else f"[{interval[0]:+.3g}, {interval[1]:+.3g}]"
                    ),
                    outcome_html(outcome_of(g)),
                    html.escape(str(g.get("reason") or "")),
                ]
            )
        headers = ("configuration", "paired seeds", "mean gap (points)", "95 % interval",
                   "verdict", "reason")  # fmt: skip
        parts.append(table(headers, rows, raw=True))
    else:
        parts.append('<p class="note">No MSE–CE pair.</p>')
    if pairing.pairs:
        rows = [
            [
                p.get("group") or "—",
                p.get("seed"),
                p["mse_run"],
                p["ce_run"],
                _pct(p.get("mse_test_accuracy")),
                _pct(p.get("ce_test_accuracy")),
                _points(p.get("value")),
                p.get("reason") or "",
            ]
            for p in pairing.pairs
        ]
        headers = ("configuration", "seed", "MSE run", "CE run", "MSE test acc.",
                   "CE test acc.", "gap (points)", "note")  # fmt: skip
        parts.append("<h3>Pairs</h3>\n" + table(headers, rows))
    if pairing.unpaired:
        rows = [[u["run"], u["loss"], u["reason"]] for u in pairing.unpaired]
        parts.append("<h3>Unpaired runs</h3>\n" + table(("run", "loss", "why unpaired"), rows))
    return "\n".join(parts)


def _points(value: Any) -> str:
    return "—" if value is None else f"{value:+.3g}"


def _pct(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return f"{sig3(100 * value)} %"


#: columns of claims.csv (one row per run and claim, then one per seed group and claim)
CLAIMS_CSV_COLUMNS = ("scope", "run", "group", "loss", "claim", "outcome", "value", "threshold",
                      "noise", "reason", "n", "holds", "fails", "inconclusive",
                      "not_applicable")  # fmt: skip


def verdicts_csv(entries: Sequence[RunEntry], groups: Sequence[Mapping[str, Any]]) -> str:
    """CSV of every verdict, long format (:data:`CLAIMS_CSV_COLUMNS`).

    ``scope`` = ``run``: one row per run and claim with its outcome in words, value, threshold,
    noise and reason. ``scope`` = ``group``: one row per seed group and claim with ``n`` and
    how many runs it holds / fails / is inconclusive / not applicable in.
    """
    group_of = {name: str(g["group"]) for g in groups for name in g["runs"]}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CLAIMS_CSV_COLUMNS)
    for entry in entries:
        by_id = {str(c.get("id")): c for c in entry.claims}
        for cid in CLAIM_IDS:
            claim = by_id.get(cid, {"id": cid, "reason": "no record"})
            row = {
                "scope": "run",
                "run": entry.name,
                "group": group_of.get(entry.name, ""),
                "loss": entry.loss or "",
                "claim": cid,
                "outcome": outcome_of(claim),
                "value": claim.get("value"),
                "threshold": claim.get("threshold"),
                "noise": claim.get("noise"),
                "reason": _reason(claim),
            }
            writer.writerow([table_cell(row.get(c)) for c in CLAIMS_CSV_COLUMNS])
    for group in groups:
        for cid in CLAIM_IDS:
            counts = group["claims"][cid]
            row = {"scope": "group", "group": group["group"], "loss": group["loss"],
                   "claim": cid, "n": group["n"], "holds": counts["holds"],
                   "fails": counts["fails"], "inconclusive": counts["inconclusive"],
                   "not_applicable": counts["not applicable"]}  # fmt: skip
            writer.writerow([table_cell(row.get(c)) for c in CLAIMS_CSV_COLUMNS])
    return buffer.getvalue()


#: columns of accuracy_gaps.csv (pairs, then claim 4 per group, then unpaired runs)
GAPS_CSV_COLUMNS = ("scope", "group", "dataset", "model", "seed", "mse_run", "ce_run",
                    "mse_test_accuracy", "ce_test_accuracy", "accuracy_gap_pp", "n", "ci_low",
                    "ci_high", "threshold", "outcome", "reason")  # fmt: skip


def accuracy_gap_csv(pairing: Pairing) -> str:
    """CSV of claim 4 (:data:`GAPS_CSV_COLUMNS`; gaps in percentage points).

    ``scope`` = ``pair``: one MSE–CE pair (one seed); ``group``: the paired seeds of one
    configuration with the mean gap, its 95 % interval and the verdict; ``unpaired``: a run
    without partner and the reason.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(GAPS_CSV_COLUMNS)
    for p in pairing.pairs:
        row = {**p, "scope": "pair", "accuracy_gap_pp": p.get("value")}
        writer.writerow([table_cell(row.get(c)) for c in GAPS_CSV_COLUMNS])
    for g in pairing.groups:
        interval = g.get("interval") or (None, None)
        row = {**g, "scope": "group", "accuracy_gap_pp": g.get("value"), "seed": "",
               "mse_run": " ".join(g["mse_runs"]), "ce_run": " ".join(g["ce_runs"]),
               "ci_low": interval[0], "ci_high": interval[1], "outcome": outcome_of(g)}  # fmt: skip
        writer.writerow([table_cell(row.get(c)) for c in GAPS_CSV_COLUMNS])
    for u in pairing.unpaired:
        side = "mse_run" if u["loss"] == "mse" else "ce_run"
        row = {"scope": "unpaired", side: u["run"], "reason": u["reason"]}
        writer.writerow([table_cell(row.get(c)) for c in GAPS_CSV_COLUMNS])
    return buffer.getvalue()


def comparison_verdicts(runs: Sequence[Any]) -> tuple[list[RunEntry], list[dict], Pairing]:
    """Entries, seed groups and MSE–CE pairing of loaded training runs."""
    entries = run_entries(runs)
    return entries, seed_groups(entries), pair_runs(entries)
