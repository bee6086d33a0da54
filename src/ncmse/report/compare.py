"""Several runs side by side: verdicts, claim 4, overlays, datasets × networks grids, accuracy.

Figures describe runs by dataset, model, loss and seed read from summary.json (else config.yaml).
Numbers compare only runs whose whole configurations agree (:mod:`ncmse.pairing`): the accuracy
table has one row per configuration apart from loss and seed, and reports the mean ± sample
standard deviation over its seeds per loss; the verdicts count claims per group of runs that
differ only by seed and pair MSE with CE runs of the same configuration (claim 4).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ncmse.errors import InputError
from ncmse.fileio import atomic_write_text
from ncmse.pairing import LOSS_KEYS, RunEntry, distinct_labels, group_by_config
from ncmse.report.figures import derived_columns
from ncmse.report.html import check_embed, figure_html, page, relative_link, table
from ncmse.report.numbers import plus_minus, sig3
from ncmse.report.style import (
    TPT_COLOUR,
    FigureFile,
    colour,
    loss_colour,
    loss_display,
    loss_key,
    metric_label,
    new_figure,
    save_figure,
    set_log_y,
)
from ncmse.report.verdicts import (
    accuracy_gap_csv,
    accuracy_gap_section,
    claim_groups_section,
    comparison_verdicts,
    final_test_accuracy,
    verdicts_csv,
    verdicts_section,
)
from ncmse.rundir import Run, load_run

__all__ = [
    "COMPARE_METRICS",
    "AccuracyCell",
    "accuracy_table",
    "plot_grids",
    "plot_overlays",
    "write_comparison_report",
]

#: (column, title, log scale) of the metrics compared across runs.
COMPARE_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("train_error", "Training error", False),
    ("test_error", "Test error (1 − test_accuracy)", False),
    ("nc1", "NC1", True),
    ("equinorm_means", "Equinorm of class means", True),
    ("equiangular_means", "Equiangularity of class means", True),
    ("maxangle_means", "Max-angle of class means", True),
    ("nc3", "NC3", True),
    ("nc4", "NC4", True),
    ("loss_perp_ratio", "L_⊥ / L", True),
)

_UNKNOWN = "?"


@dataclass(frozen=True)
class AccuracyCell:
    """Final test accuracies of the seeds of one (dataset, model, loss).

    Attributes
    ----------
    values : tuple of float
        One final test accuracy per run that has one.
    runs : int
        Number of runs in the group (including those without a test accuracy).
    """

    values: tuple[float, ...]
    runs: int

    @property
    def mean(self) -> float:
        """Mean over seeds (NaN when no run has a test accuracy)."""
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof = 1; 0 for a single run)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        """``mean ± std % (n = k)`` in percent (3 significant digits), or an em dash."""
        if not self.values:
            return "—"
        n = len(self.values)
        if n > 1:
            return f"{plus_minus(self.mean, self.std, scale=100.0)} % (n = {n})"
        return f"{sig3(100 * self.mean)} % (n = 1)"


def write_comparison_report(
    run_dirs: Sequence[str | Path], out_dir: str | Path, *, embed: str = "png"
) -> Path:
    """Compare several runs: figures into ``out_dir/figures``, ``out_dir/report.html``.

    Parameters
    ----------
    run_dirs : sequence of str or Path
        Run directories of ``ncmse train`` (UFM runs are listed and linked, not overlaid).
    out_dir : str or Path
        Output folder, created if missing.
    embed : {"png", "svg"}
        How figures are embedded in the page.

    Returns
    -------
    Path
        ``out_dir/report.html``. ``out_dir/accuracy_table.csv`` holds the accuracy table.

    Raises
    ------
    ncmse.errors.InputError
        If ``run_dirs`` is empty or one of them is not a run directory.
    """
    if not run_dirs:
        raise InputError("no run directory given; pass at least one RUN_DIR to compare")
    check_embed(embed)
    runs = [load_run(d) for d in run_dirs]
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_runs = [r for r in runs if r.kind != "ufm"]
    figures = plot_grids(train_runs, out / "figures") + plot_overlays(train_runs, out / "figures")
    cells = accuracy_table(train_runs)
    csv_path = atomic_write_text(out / "accuracy_table.csv", _accuracy_csv(cells))
    entries, groups, pairing = comparison_verdicts(train_runs)
    atomic_write_text(out / "accuracy_gaps.csv", accuracy_gap_csv(pairing))
    atomic_write_text(out / "claims.csv", verdicts_csv(entries, groups))
    verdicts = ""
    if train_runs:
        verdicts = "\n".join(
            (
                verdicts_section(train_runs, entries, out),
                claim_groups_section(groups),
                accuracy_gap_section(pairing),
            )
        )
        verdicts += (
            "\n<p>As CSV: "
            + " · ".join(
                relative_link(out / n, out, n) for n in ("claims.csv", "accuracy_gaps.csv")
            )
            + "</p>"
        )
    body = _comparison_body(runs, figures, cells, csv_path, out, embed, verdicts)
    report = out / "report.html"
    atomic_write_text(report, page("ncmse comparison report", body))
    return report


def accuracy_table(runs: Sequence[Run]) -> dict[tuple[str, str, str], dict[str, AccuracyCell]]:
    """Final test accuracy per configuration and loss, aggregated over seeds.

    A configuration is a group of runs whose config.yaml agree except the loss keys and the
    seed (:func:`ncmse.pairing.group_by_config`): a 64×2 MLP and a 512×3 MLP on the same
    dataset are two rows.

    Returns
    -------
    dict
        ``{(configuration, dataset, model): {loss_key: AccuracyCell}}``, sorted by dataset,
        model and configuration label.
    """
    labels = distinct_labels([r.path for r in runs])
    entries = [
        RunEntry(
            name=label,
            loss=loss_key(run.describe("loss")),
            config=run.config or None,
            test_accuracy=final_test_accuracy(run),
            describe={k: run.describe(k) or _UNKNOWN for k in ("dataset", "model")},
        )
        for run, label in zip(runs, labels)
    ]
    table_: dict[tuple[str, str, str], dict[str, AccuracyCell]] = {}
    for label, members in group_by_config(entries, drop=(*LOSS_KEYS, "seed")):
        first = members[0].describe
        by_loss: dict[str, list[RunEntry]] = {}
        for member in members:
            by_loss.setdefault(str(member.loss), []).append(member)
        table_[(label, first["dataset"], first["model"])] = {
            loss: AccuracyCell(
                tuple(m.test_accuracy for m in group if m.test_accuracy is not None), len(group)
            )
            for loss, group in sorted(by_loss.items(), key=lambda kv: _loss_order(kv[0]))
        }
    return dict(sorted(table_.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])))


def plot_overlays(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """One figure per compared metric with every run on the same axes.

    Colour: the (dataset, model) configuration (Okabe–Ito); line style: the loss (MSE solid,
    CE dashed); seeds of a configuration share colour and style.
    """
    if not runs:
        return []
    configs = sorted(
        {(r.describe("dataset") or _UNKNOWN, r.describe("model") or _UNKNOWN) for r in runs}
    )
    losses = sorted({loss_key(r.describe("loss")) for r in runs}, key=_loss_order)
    styles = {loss: ("-", "--", ":", "-.")[i % 4] for i, loss in enumerate(losses)}
    columns = [derived_columns(r) for r in runs]
    written = []
    for metric, title, log in COMPARE_METRICS:
        if not any(_finite(c.get(metric)) for c in columns):
            continue
        fig, axes = new_figure(width=6.4, height=4.4, legend_width=2.6)
        ax = axes[0, 0]
        seen: set[str] = set()
        for run, cols in zip(runs, columns):
            config = (run.describe("dataset") or _UNKNOWN, run.describe("model") or _UNKNOWN)
            loss = loss_key(run.describe("loss"))
            label = f"{config[0]}/{config[1]} {loss_display(loss)}"
            _draw(
                ax,
                run,
                cols.get(metric),
                log,
                colour=colour(configs.index(config)),
                style=styles[loss],
                label=None if label in seen else label,
            )
            seen.add(label)
        _decorate(ax, title=f"{title} — all runs", ylabel=metric, log=log, outside=True)
        caption = (
            f"{metric_label(metric)}, every run. Colour: dataset/model; line style: loss "
            "(seeds share both)."
        )
        written.append(
            save_figure(
                fig, out_dir, f"overlay_{metric}", title=f"Overlay: {title}", caption=caption
            )
        )
    return written


def plot_grids(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """One figure per compared metric: a datasets (rows) × networks (columns) grid, MSE vs CE.

    In each cell the runs of that dataset and network are drawn coloured by loss (MSE blue, CE
    vermillion), one line per seed; a single-run TPT is marked in its loss colour.
    """
    if not runs:
        return []
    datasets = sorted({r.describe("dataset") or _UNKNOWN for r in runs})
    models = sorted({r.describe("model") or _UNKNOWN for r in runs})
    other_losses = sorted({loss_key(r.describe("loss")) for r in runs} - {"mse", "ce"})
    columns = [derived_columns(r) for r in runs]
    written = []
    for metric, title, log in COMPARE_METRICS:
        if not any(_finite(c.get(metric)) for c in columns):
            continue
        fig, axes = new_figure(
            ncols=len(models), nrows=len(datasets), width=4.2, height=3.2, suptitle=True
        )
        for i, dataset in enumerate(datasets):
            for j, model in enumerate(models):
                ax = axes[i, j]
                seen: set[str] = set()
                for run, cols in zip(runs, columns):
                    if (run.describe("dataset") or _UNKNOWN, run.describe("model") or _UNKNOWN) != (
                        dataset,
                        model,
                    ):
                        continue
                    loss = run.describe("loss")
                    label = loss_display(loss)
                    _draw(
                        ax,
                        run,
                        cols.get(metric),
                        log,
                        colour=loss_colour(loss, other_losses),
                        style="-",
                        label=None if label in seen else label,
                        tpt=True,
                    )
                    seen.add(label)
                _decorate(ax, title=f"{dataset} · {model}", ylabel=metric, log=log, empty=not seen)
        fig.suptitle(f"{title}: datasets × networks, MSE vs CE")
        caption = (
            f"{metric} ({metric_label(metric)}) for each dataset (row) and network "
            "(column); colour = loss, one line per seed, dotted vertical line = TPT."
        )
        written.append(
            save_figure(fig, out_dir, f"grid_{metric}", title=f"Grid: {title}", caption=caption)
        )
    return written


def _draw(
    ax, run: Run, y, log: bool, *, colour: str, style: str, label: str | None, tpt: bool = False
) -> None:
    if not _finite(y):
        return
    x, _ = run.x_axis()
    y = np.asarray(y, dtype=float)
    if log:
        y = np.where(y > 0, y, np.nan)
    mask = np.isfinite(x) & np.isfinite(y)
    if mask.any():
        ax.plot(
            x[mask], y[mask], style, color=colour, lw=1.4, marker="o", markersize=2, label=label
        )
    if tpt and run.tpt_epoch is not None:
        ax.axvline(run.tpt_epoch, color=colour, ls=":", lw=1.0, alpha=0.8)


def _decorate(
    ax, *, title: str, ylabel: str, log: bool, empty: bool = False, outside: bool = False
) -> None:
    if empty:
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            f"{title}\nno run",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color=TPT_COLOUR,
        )
        return
    if log and ax.get_lines():
        set_log_y(ax)
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not ax.get_legend_handles_labels()[0]:
        return
    if outside:  # many runs: keep the legend off the curves, in the reserved right margin
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize="small", loc="upper right")


def _finite(values) -> bool:
    return values is not None and bool(np.isfinite(np.asarray(values, dtype=float)).any())


def _loss_order(loss: str) -> tuple[int, str]:
    return ({"mse": 0, "ce": 1}.get(loss, 2), loss)


def _all_losses(cells: dict[tuple[str, str, str], dict[str, AccuracyCell]]) -> list[str]:
    return sorted({loss for row in cells.values() for loss in row}, key=_loss_order)


def _accuracy_csv(cells: dict[tuple[str, str, str], dict[str, AccuracyCell]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "configuration",
            "dataset",
            "model",
            "loss",
            "runs",
            "n_with_test_accuracy",
            "test_accuracy_mean",
            "test_accuracy_std",
        ]
    )
    for (config, dataset, model), row in cells.items():
        for loss, cell in row.items():
            mean = repr(cell.mean) if cell.values else ""
            std = repr(cell.std) if cell.values else ""
            writer.writerow([config, dataset, model, loss, cell.runs, len(cell.values), mean, std])
    return buffer.getvalue()


def _accuracy_html(cells: dict[tuple[str, str, str], dict[str, AccuracyCell]]) -> str:
    losses = _all_losses(cells)
    with_diff = "mse" in losses and "ce" in losses
    headers = ["configuration (apart from loss and seed)"]
    headers += [f"{loss_display(x)} test accuracy" for x in losses]
    if with_diff:
        headers.append("MSE − CE (points)")
    rows = []
    for (config, _dataset, _model), row in cells.items():
        line = [config] + [row[x].text() if x in row else "—" for x in losses]
        if with_diff:
            mse, ce = row.get("mse"), row.get("ce")
            ok = mse is not None and ce is not None and mse.values and ce.values
            line.append(f"{100 * (mse.mean - ce.mean):+.3g}" if ok else "—")
        rows.append(line)
    return table(headers, rows)


def _runs_html(runs: Sequence[Run], out: Path) -> str:
    rows = []
    for run, label in zip(runs, distinct_labels([r.path for r in runs])):
        report = run.path / "report.html"
        links = [relative_link(report, out, "report")] if report.is_file() else []
        if run.metrics_file is not None:
            links.append(relative_link(run.metrics_file, out, run.metrics_file.name))
        final = run.final()
        rows.append(
            [
                html.escape(label),
                html.escape(run.kind),
                *(
                    html.escape(run.describe(k) or "—")
                    for k in ("dataset", "model", "loss", "seed")
                ),
                html.escape(str(run.summary.get("status", "—"))),
                html.escape(str(run.summary.get("tpt_epoch", "—"))),
                html.escape(_pct(final.get("test_accuracy"))),
                " · ".join(links) or "—",
            ]
        )
    headers = [
        "run",
        "kind",
        "dataset",
        "model",
        "loss",
        "seed",
        "status",
        "tpt_epoch",
        "final test_accuracy",
        "files",
    ]
    return table(headers, rows, raw=True)


def _pct(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{sig3(100 * value)} %" if math.isfinite(value) else "—"


def _comparison_body(
    runs, figures, cells, csv_path: Path, out: Path, embed: str, verdicts: str = ""
) -> str:
    parts = [
        "<h1>ncmse comparison report</h1>",
        f"<p>{len(runs)} run(s), named by the shortest distinct end of their path. Seeds of one "
        "configuration and loss are aggregated as mean ± sample standard deviation "
        "(ddof = 1).</p>",
        verdicts,
        "<h2>Runs</h2>",
        _runs_html(runs, out),
        "<h2>Final test accuracy: MSE vs CE</h2>",
        _accuracy_html(cells) if cells else '<p class="note">No training run.</p>',
        f"<p>As CSV: {relative_link(csv_path, out, csv_path.name)}</p>",
        "<h2>Figures</h2>",
    ]
    if figures:
        parts.extend(figure_html(f, out, embed) for f in figures)
    else:
        parts.append('<p class="note">No measurement to plot.</p>')
    return "\n".join(parts)
