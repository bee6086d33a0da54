"""Several runs side by side: verdicts, claim 4, overlays, datasets × networks grids, accuracy.

Figures describe runs by dataset, model, loss and seed read from summary.json (else config.yaml).
Numbers compare only runs whose whole configurations agree (:mod:`ncmse.verdicts.pairing`): the
accuracy
table has one row per configuration apart from loss and seed, and reports the mean ± sample
standard deviation over its seeds per loss; the verdicts count claims per group of runs that
differ only by seed and pair MSE with CE runs of the same configuration (claim 4).
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ncmse.errors import InputError
from ncmse.report.figures import derived_columns
from ncmse.report.html import check_embed, figure_html, page, relative_link, table
from ncmse.report.style import (
    TPT_COLOUR,
    FigureFile,
    layout_figure,
    legend_columns,
    legend_wrap,
    log_floor,
    loss_colour,
    loss_display,
    loss_key,
    mark_floor,
    metric_label,
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
from ncmse.rundir.atomic import atomic_write_text
from ncmse.rundir.format import number, rows_to_csv, snr_columns
from ncmse.rundir.numfmt import plus_minus, sig3
from ncmse.rundir.reader import Run, load_run
from ncmse.verdicts.pairing import PAIR_FREE_KEYS, RunEntry, distinct_labels, group_by_config

__all__ = [
    "COMPARE_METRICS",
    "GRID_METRICS",
    "OVERLAYS",
    "SeedGroup",
    "compare_columns",
    "seed_groups_of",
    "AccuracyCell",
    "accuracy_table",
    "plot_grids",
    "plot_overlays",
    "write_comparison_report",
]

#: (column, title, log scale allowed) of the metrics compared across runs; a log axis is used
#: where the values span two decades or more.
COMPARE_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("train_error", "Training error", True),
    ("test_error", "Test error (1 − test_accuracy)", True),
    ("nc1", "NC1", True),
    ("equinorm_means", "Equinorm of class means", True),
    ("equiangular_means", "Equiangularity of class means", True),
    ("maxangle_means", "Max-angle of class means", True),
    ("equinorm_classifier", "Equinorm of classifier rows", True),
    ("equiangular_classifier", "Equiangularity of classifier rows", True),
    ("maxangle_classifier", "Max-angle of classifier rows", True),
    ("nc3", "NC3", True),
    ("nc4", "NC4", True),
    ("loss_nc1", "L_NC1", True),
    ("loss_nc23", "L_NC2/3", True),
    ("loss_perp", "L_⊥", True),
    ("loss_perp_ratio", "L_⊥ / L", True),
    ("snr_min", "ω_min (smallest SNR singular value)", True),
    ("snr_ratio", "ω_max / ω_min", True),
)

#: Metrics that get a datasets × networks grid (the paper's figures).
GRID_METRICS: tuple[str, ...] = (
    "train_error",
    "test_error",
    "nc1",
    "equinorm_means",
    "equiangular_means",
    "maxangle_means",
    "nc3",
    "nc4",
    "loss_perp_ratio",
    "snr_ratio",
)

#: Overlay figures: (file stem, title, metrics drawn as its panels).
OVERLAYS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("error", "Training and test error", ("train_error", "test_error")),
    ("nc1", "NC1", ("nc1",)),
    (
        "nc2_means",
        "NC2 of the class means",
        ("equinorm_means", "equiangular_means", "maxangle_means"),
    ),  # fmt: skip
    (
        "nc2_classifier",
        "NC2 of the classifier",
        ("equinorm_classifier", "equiangular_classifier", "maxangle_classifier"),
    ),  # fmt: skip
    ("nc3_nc4", "NC3 and NC4", ("nc3", "nc4")),
    (
        "decomposition",
        "MSE decomposition",
        ("loss_nc1", "loss_nc23", "loss_perp", "loss_perp_ratio"),
    ),  # fmt: skip
    ("snr", "SNR spectrum", ("snr_min", "snr_ratio")),
)

_TITLES = {metric: title for metric, title, _ in COMPARE_METRICS}
_LOG_ALLOWED = {metric: log for metric, _, log in COMPARE_METRICS}
#: a log axis where the positive values span at least this factor
_DECADES_FOR_LOG = 100.0
_STYLES = ("-", "--", ":", "-.")
_BAND = "shaded band: min–max over seeds"

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
    seed (:func:`ncmse.verdicts.pairing.group_by_config`): a 64×2 MLP and a 512×3 MLP on the same
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
    for label, members in group_by_config(entries, drop=(*PAIR_FREE_KEYS, "seed")):
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


@dataclass
class SeedGroup:
    """Runs that differ only by seed (:func:`ncmse.pairing.group_by_config`), drawn as one line.

    Attributes
    ----------
    label : str
        The configuration's label (dataset/model, loss and what else tells groups apart).
    loss : str
        Normalised loss (``mse``, ``ce``, …).
    dataset, model : str
        For the grid.
    runs : list of Run
        Its runs (one per seed).
    columns : list of dict
        :func:`compare_columns` of each run.
    """

    label: str
    loss: str
    dataset: str
    model: str
    runs: list[Run]
    columns: list[dict[str, np.ndarray]]

    def aggregate(self, metric: str) -> tuple[np.ndarray, ...] | None:
        """Median, min and max over seeds of ``metric`` at each epoch any run measured.

        Returns
        -------
        (x, median, low, high, count) of arrays of shape (T,), or None when no run has a
        finite value. ``count`` is how many seeds have a value at each epoch.
        """
        series = []
        for run, cols in zip(self.runs, self.columns):
            y = cols.get(metric)
            if not _finite(y):
                continue
            x, _ = run.x_axis()
            keep = np.isfinite(x) & np.isfinite(np.asarray(y, dtype=float))
            series.append(dict(zip(x[keep].tolist(), np.asarray(y, dtype=float)[keep].tolist())))
        if not series:
            return None
        x = np.array(sorted(set().union(*series)), dtype=float)
        table_ = np.array([[s.get(e, np.nan) for e in x] for s in series], dtype=float)
        count = np.isfinite(table_).sum(axis=0)
        with np.errstate(all="ignore"):
            median = np.nanmedian(table_, axis=0)
            low, high = np.nanmin(table_, axis=0), np.nanmax(table_, axis=0)
        return x, median, low, high, count

    def tpt(self) -> float | None:
        """Median TPT epoch over the seeds that reached it (None if none did)."""
        epochs = [r.tpt_epoch for r in self.runs if r.tpt_epoch is not None]
        return float(np.median(epochs)) if epochs else None

    def legend(self) -> str:
        seeds = len(self.runs)
        return f"{self.label} ({seeds} seed{'s' if seeds > 1 else ''}: median)"


def compare_columns(run: Run) -> dict[str, np.ndarray]:
    """:func:`ncmse.report.figures.derived_columns` plus ``snr_min``, the smallest ω_j."""
    cols = derived_columns(run)
    snr = snr_columns(cols)
    if snr and "snr_min" not in cols:
        with np.errstate(all="ignore"):
            cols["snr_min"] = np.nanmin(np.vstack([cols[n] for n in snr]), axis=0)
    return cols


def seed_groups_of(runs: Sequence[Run]) -> list[SeedGroup]:
    """The runs grouped by configuration apart from the seed, MSE groups first."""
    labels = distinct_labels([r.path for r in runs])
    by_name = dict(zip(labels, runs))
    entries = [
        RunEntry(name=label, loss=loss_key(run.describe("loss")), config=run.config or None)
        for run, label in zip(runs, labels)
    ]
    groups = []
    for label, members in group_by_config(entries, drop=("seed",)):
        members_runs = [by_name[m.name] for m in members]
        first = members_runs[0]
        groups.append(
            SeedGroup(
                label=label,
                loss=str(members[0].loss),
                dataset=first.describe("dataset") or _UNKNOWN,
                model=first.describe("model") or _UNKNOWN,
                runs=members_runs,
                columns=[compare_columns(r) for r in members_runs],
            )
        )
    return sorted(groups, key=lambda g: (_loss_order(g.loss), g.dataset, g.model, g.label))


def plot_overlays(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """Overlay figures (:data:`OVERLAYS`): every seed group on the same axes, one panel per metric.

    Colour: the loss (one Okabe–Ito colour each); line style: the configuration within a loss.
    Each group is its median over seeds with a shaded min–max band; one ▼ per group marks its
    median TPT epoch; one legend per figure, below the panels.
    """
    groups = seed_groups_of(runs)
    if not groups:
        return []
    others = sorted({g.loss for g in groups} - {"mse", "ce"})
    styles = _config_styles(groups)
    written = []
    for stem, title, metrics in OVERLAYS:
        present = [m for m in metrics if any(g.aggregate(m) is not None for g in groups)]
        if not present:
            continue
        width = max(_MIN_WIDTH, 4.6 * len(present) + 0.4)
        entries = [(g.legend(), loss_colour(g.loss, others), styles[g.label]) for g in groups]
        fig = layout_figure(width, 4.0 + _legend_height(width, entries))
        axes = fig.subplots(1, len(present), squeeze=False)[0]
        notes: list[str] = []
        for ax, metric in zip(axes, present):
            drawn = [(g, loss_colour(g.loss, others), styles[g.label]) for g in groups]
            notes += _draw_groups(ax, drawn, metric)
            _decorate(ax, title=_TITLES[metric], ylabel=metric)
        _figure_legend(fig, entries)
        _suptitle(fig, f"{title} — all runs")
        caption = (
            "; ".join(f"{m}: {metric_label(m).split(': ', 1)[-1]}" for m in present)
            + ". Each line is the median over the seeds of one configuration, the shaded band "
            "their min–max; colour = loss, line style = configuration; ▼ = median TPT epoch."
            + _notes_text(notes)
        )
        written.append(
            save_figure(
                fig,
                out_dir,
                f"overlay_{stem}",
                title=f"Overlay: {title}",
                caption=caption,
                formats=_FORMATS,
            )  # fmt: skip
        )
    return written


def plot_grids(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """One figure per :data:`GRID_METRICS` metric: datasets (rows) × networks (columns), MSE
    and CE overlaid as in the paper's figures.

    Networks are grouped into columns by family (vgg, resnet, densenet: the model name without
    its depth) when no dataset has two networks of one family, else by model. Cells of a partial
    grid with no run say so; a sweep of one dataset is one row.
    """
    groups = seed_groups_of(runs)
    if not groups:
        return []
    others = sorted({g.loss for g in groups} - {"mse", "ce"})
    datasets = sorted({g.dataset for g in groups}, key=lambda d: _paper_order(d, _DATASETS))
    column_of = _network_columns(groups)
    columns = sorted(set(column_of.values()), key=lambda n: _paper_order(n, _NETWORKS))
    losses = sorted({g.loss for g in groups}, key=_loss_order)
    # a cell with two configurations of one loss needs line styles and a legend entry per group
    cells = [(g.dataset, column_of[g.label], g.loss) for g in groups]
    ambiguous = len(cells) != len(set(cells))
    styles = _config_styles(groups) if ambiguous else {g.label: "-" for g in groups}
    if ambiguous:
        entries = [(g.legend(), loss_colour(g.loss, others), styles[g.label]) for g in groups]
    else:
        entries = [(loss_display(x), loss_colour(x, others), "-") for x in losses]
    written = []
    for metric in GRID_METRICS:
        if all(g.aggregate(metric) is None for g in groups):
            continue
        width = max(_MIN_WIDTH, 3.9 * len(columns) + 0.3)
        fig = layout_figure(width, 3.0 * len(datasets) + 0.8 + _legend_height(width, entries))
        axes = fig.subplots(len(datasets), len(columns), squeeze=False)
        notes: list[str] = []
        for i, dataset in enumerate(datasets):
            for j, network in enumerate(columns):
                cell = [g for g in groups if g.dataset == dataset and column_of[g.label] == network]
                ax = axes[i, j]
                if not cell or all(g.aggregate(metric) is None for g in cell):
                    _empty_cell(ax, f"{dataset} · {network}: no run")
                    continue
                models = " / ".join(sorted({g.model for g in cell}))
                drawn = [(g, loss_colour(g.loss, others), styles[g.label]) for g in cell]
                notes += _draw_groups(ax, drawn, metric)
                _decorate(ax, title=f"{dataset} · {models}", ylabel=metric)
        _figure_legend(fig, entries)
        _suptitle(fig, f"{_TITLES[metric]}: datasets × networks, MSE vs CE")
        caption = (
            f"{metric}: {metric_label(metric).split(': ', 1)[-1]}, for each dataset (row) and "
            "network (column); colour = loss; line = median over seeds, shaded band = min–max; "
            "▼ = median TPT epoch." + _notes_text(notes)
        )
        written.append(
            save_figure(
                fig,
                out_dir,
                f"grid_{metric}",
                title=f"Grid: {_TITLES[metric]}",
                caption=caption,
                formats=_FORMATS,
            )  # fmt: skip
        )
    return written


_FORMATS = ("png", "pdf", "svg")
#: the narrowest overlay or grid figure, in inches: room for the title and the legend
_MIN_WIDTH = 6.4


def _suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 7 pt per character at its size)."""
    fig.suptitle(textwrap.fill(text, int(fig.get_figwidth() * 72.0 // 7.5)))


#: the paper's order of datasets (rows) and network families (columns); others follow, sorted
_DATASETS = ("mnist", "fashionmnist", "cifar10", "svhn", "stl10")
_NETWORKS = ("vgg", "resnet", "densenet")


def _paper_order(name: str, order: Sequence[str]) -> tuple[int, str]:
    key = name.lower().replace("-", "").replace("_", "")
    family = key.rstrip("0123456789")
    rank = order.index(key) if key in order else order.index(family) if family in order else None
    return (len(order) if rank is None else rank, name)


def _config_styles(groups: Sequence[SeedGroup]) -> dict[str, str]:
    """Line style of each group: configurations of one loss take the styles in turn."""
    counters: dict[str, int] = {}
    out = {}
    for g in groups:
        index = counters.get(g.loss, 0)
        counters[g.loss] = index + 1
        out[g.label] = _STYLES[index % len(_STYLES)]
    return out


def _network_columns(groups: Sequence[SeedGroup]) -> dict[str, str]:
    """Grid column of each group (by label): the network family, or the model on a clash."""
    family = {g.model: g.model.rstrip("0123456789_-") or g.model for g in groups}
    clash = any(
        len({g.model for g in groups if g.dataset == d and family[g.model] == f}) > 1
        for d in {g.dataset for g in groups}
        for f in set(family.values())
    )
    return {g.label: (g.model if clash else family[g.model]) for g in groups}


def _draw_groups(ax: Axes, drawn: Sequence[tuple[SeedGroup, str, str]], metric: str) -> list[str]:
    """Median lines and min–max bands of ``metric``; returns notes (a zero floor) for the
    caption."""
    stats = [(g, c, st, g.aggregate(metric)) for g, c, st in drawn]
    stats = [t for t in stats if t[3] is not None]
    values = [a for *_, agg in stats for a in (agg[1], agg[2], agg[3])]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.empty(0)
    positive = finite[finite > 0]
    log = (
        _LOG_ALLOWED.get(metric, False)
        and positive.size > 0
        and positive.max() / positive.min() >= _DECADES_FOR_LOG
    )
    floor = log_floor(values) if log else None
    notes = []
    for group, colour_, style, (x, median, low, high, count) in stats:
        if log:
            median, low, high = (_at_floor(v, floor) for v in (median, low, high))
        ax.plot(x, median, ls=style, color=colour_, lw=1.6, marker="o", ms=2)
        band = count >= 2
        if band.any():
            ax.fill_between(x, low, high, where=band, color=colour_, alpha=0.2, lw=0)
        tpt = group.tpt()
        if tpt is not None:
            ax.plot([tpt], [0.97], marker="v", ms=7, color=colour_, ls="none",
                    transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip
    if log:
        set_log_y(ax)
        mark_floor(ax, floor)
        if floor is not None:
            notes.append(f"{metric} = 0 drawn at {floor:.0e}")
    return notes


def _at_floor(values: np.ndarray, floor: float | None) -> np.ndarray:
    return np.where(values > 0, values, floor if floor is not None else np.nan)


def _legend_labels(width: float, entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """The legend's labels (the lines, the band, the TPT mark), wrapped to a figure ``width``
    inches wide."""
    labels = [label for label, _, _ in entries] + [
        _BAND,
        "median TPT epoch (seeds that reached it)",
    ]
    return [legend_wrap(label, width) for label in labels]


def _legend_height(width: float, entries: Sequence[tuple[str, str, str]]) -> float:
    """Inches the legend of :func:`_figure_legend` takes below the panels."""
    labels = _legend_labels(width, entries)
    ncol = legend_columns(labels, width, most=len(labels))
    lines = [len(label.splitlines()) for label in labels]
    rows = [max(lines[i : i + ncol]) for i in range(0, len(lines), ncol)]
    return 0.25 + 0.2 * sum(rows)


def _figure_legend(fig: Figure, entries: Sequence[tuple[str, str, str]]) -> None:
    """One legend for the whole figure, below the panels: the lines, the band, the TPT mark."""
    handles = [Line2D([], [], color=c, ls=st, lw=1.6) for _, c, st in entries]
    handles += [Patch(color="grey", alpha=0.3), Line2D([], [], color="grey", marker="v",
                                                        ls="none")]  # fmt: skip
    labels = _legend_labels(fig.get_figwidth(), entries)
    ncol = legend_columns(labels, fig.get_figwidth(), most=len(labels))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize="small",
               frameon=False)  # fmt: skip


def _notes_text(notes: Sequence[str]) -> str:
    unique = list(dict.fromkeys(notes))
    return (" Zeros on log axes: " + "; ".join(unique) + ".") if unique else ""


def _empty_cell(ax: Axes, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color=TPT_COLOUR, fontsize="small", wrap=True)  # fmt: skip


def _decorate(ax: Axes, *, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _finite(values) -> bool:
    return values is not None and bool(np.isfinite(np.asarray(values, dtype=float)).any())


def _loss_order(loss: str) -> tuple[int, str]:
    return ({"mse": 0, "ce": 1}.get(loss, 2), loss)


def _all_losses(cells: dict[tuple[str, str, str], dict[str, AccuracyCell]]) -> list[str]:
    return sorted({loss for row in cells.values() for loss in row}, key=_loss_order)


#: columns of accuracy_table.csv (one row per configuration and loss)
_ACCURACY_CSV_COLUMNS = ("configuration", "dataset", "model", "loss", "runs",
                        "n_with_test_accuracy", "test_accuracy_mean",
                        "test_accuracy_std")  # fmt: skip


def _accuracy_csv(cells: dict[tuple[str, str, str], dict[str, AccuracyCell]]) -> str:
    rows = [
        {
            "configuration": config,
            "dataset": dataset,
            "model": model,
            "loss": loss,
            "runs": cell.runs,
            "n_with_test_accuracy": len(cell.values),
            "test_accuracy_mean": cell.mean if cell.values else None,
            "test_accuracy_std": cell.std if cell.values else None,
        }
        for (config, dataset, model), row in cells.items()
        for loss, cell in row.items()
    ]
    return rows_to_csv(rows, _ACCURACY_CSV_COLUMNS)


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


def _pct(value: Any) -> str:
    value = number(value)
    return f"{sig3(100 * value)} %" if math.isfinite(value) else "—"


def _comparison_body(
    runs, figures, cells, csv_path: Path, out: Path, embed: str, verdicts: str = ""
) -> str:
    parts = [
        "<h1>ncmse comparison report</h1>",
        f"<p>{len(runs)} run(s), named by the shortest distinct end of their path. Runs that "
        "differ only by seed are aggregated: in tables as mean ± sample standard deviation "
        "(ddof = 1), in figures as the median line with a shaded min–max band. Numbers have 3 "
        "significant digits.</p>",
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
