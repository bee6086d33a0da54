"""The report of one run directory: figures into RUN_DIR/figures/, the page RUN_DIR/report.html."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncmse.report.figures import plot_train_run
from ncmse.report.html import (
    check_embed,
    config_section,
    environment_section,
    figure_html,
    final_metrics_section,
    page,
    relative_link,
    table,
)
from ncmse.report.style import METRIC_LABELS, FigureFile
from ncmse.report.summary import SUMMARY_NAME, plot_run_summary
from ncmse.report.ufm_figures import plot_ufm_run
from ncmse.report.verdicts import (
    central_path_section,
    claims_section,
    plot_central_path,
    summary_section,
)
from ncmse.rundir.atomic import atomic_write_text
from ncmse.rundir.reader import Run, load_run
from ncmse.verdicts.pairing import current_claims
from ncmse.verdicts.record import run_central_path

__all__ = ["write_run_report", "run_figures", "files_section"]

#: Files of a run directory linked from its report when they exist.
_RUN_FILES = ("metrics.csv", "metrics.jsonl", "omega.csv", "summary.json", "config.yaml")


def write_run_report(run_dir: str | Path, *, embed: str = "png") -> Path:
    """Draw the figures of ``run_dir`` and write its self-contained ``report.html``.

    Parameters
    ----------
    run_dir : str or Path
        A run directory of ``ncmse train`` (paper panels) or ``ncmse ufm`` (the UFM figures of
        :mod:`ncmse.report.ufm_figures`).
    embed : {"png", "svg"}
        How figures are embedded in the page: base64 PNG or inline SVG.

    Returns
    -------
    Path
        ``RUN_DIR/report.html``.

    Raises
    ------
    ncmse.errors.InputError
        If ``run_dir`` is not a run directory or one of its files cannot be parsed.
    """
    check_embed(embed)
    run = load_run(run_dir)
    figures = run_figures(run)
    out = run.path / "report.html"
    atomic_write_text(out, _render_run_page(run, figures, embed=embed))
    return out


def run_figures(run: Run) -> list[FigureFile]:
    """Draw (training run) or collect (UFM run) the figures of ``run`` in ``RUN_DIR/figures``."""
    fig_dir = run.path / "figures"
    if run.kind == "ufm":
        return plot_ufm_run(run.path, fig_dir)
    fits, _ = run_central_path(run)
    return (
        plot_run_summary(run, fits, fig_dir)
        + plot_train_run(run, fig_dir)
        + plot_central_path(run, fits, fig_dir)
    )


def _render_run_page(run: Run, figures: Sequence[FigureFile], *, embed: str = "png") -> str:
    """The HTML page of one run."""
    title = f"ncmse report — {run.label}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if run.kind != "ufm":
        claims, source = current_claims(run)
        fits, _ = run_central_path(run)
        summary = [f for f in figures if f.name == SUMMARY_NAME]
        figures = [f for f in figures if f.name != SUMMARY_NAME]
        shown = "".join(figure_html(f, run.path, embed) for f in summary)
        parts.append(summary_section(claims, fits, shown))
        parts.append(claims_section(claims, source, {f.name for f in figures}))
    parts += [_overview(run), files_section(run, run.path)]
    if run.kind == "ufm":
        parts.append(_ufm_final_section(run))
    else:
        parts.append(final_metrics_section(run.final()))
        fits, source = run_central_path(run)
        path_figures = [f for f in figures if f.name == "central_path"]
        figures = [f for f in figures if f.name != "central_path"]
        shown = "".join(figure_html(f, run.path, embed) for f in path_figures)
        parts.append(central_path_section(fits, source, shown))
    parts.append("<h2>Figures</h2>")
    if figures:
        parts.extend(figure_html(f, run.path, embed) for f in figures)
    else:
        parts.append('<p class="note">No figure: the run has no measurement yet.</p>')
    parts.append(config_section(run.config))
    parts.append(environment_section(run.summary))
    return page(title, "\n".join(parts))


def files_section(run: Run, base_dir: Path) -> str:
    """Links, relative to ``base_dir``, to the data files of ``run``."""
    links = [
        relative_link(run.path / n, base_dir, n) for n in _RUN_FILES if (run.path / n).is_file()
    ]
    if not links:
        return ""
    return "<h2>Data files</h2>\n<p>" + " · ".join(links) + "</p>"


def _overview(run: Run) -> str:
    summary = run.summary
    rows: list[tuple[str, Any]] = [
        ("run directory", str(run.path)),
        ("kind", run.kind),
        ("status", summary.get("status")),
        ("dataset", run.describe("dataset")),
        ("model", run.describe("model")),
        ("training objective (loss_name)", run.describe("loss")),
        ("seed", run.describe("seed")),
        ("λ of the decomposition (lam)", summary.get("lam")),
        ("TPT epoch (first zero training error)", summary.get("tpt_epoch")),
        ("measurements", run.num_rows),
    ]
    rows = [(k, v) for k, v in rows if v is not None]
    return "<h2>Run</h2>\n" + table(("item", "value"), rows)


def _ufm_final_section(run: Run) -> str:
    """Last measurement of each flow of a UFM run (SPEC names as columns of metrics.csv)."""
    if run.num_rows == 0:
        return '<h2>Final metrics</h2>\n<p class="note">No metrics.csv rows.</p>'
    flows = run.text_columns.get("flow")
    if flows is None and "flow" in run.columns:
        flows = [format(v, "g") for v in run.columns["flow"]]
    flows = flows or ["run"] * run.num_rows
    order = list(dict.fromkeys(flows))
    last = {f: max(i for i, g in enumerate(flows) if g == f) for f in order}
    names = [n for n in run.columns if n not in ("flow",)]
    rows = []
    for name in names:
        values = [float(run.columns[name][last[f]]) for f in order]
        if all(np.isnan(v) for v in values):
            continue
        rows.append([name, METRIC_LABELS.get(name, "")] + values)
    return "<h2>Final metrics (last row of each flow)</h2>\n" + table(
        ["SPEC name", "definition"] + [f"flow: {f}" for f in order], rows
    )
