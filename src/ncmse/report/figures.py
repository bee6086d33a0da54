"""Figures of one training run: the panels of Han, Papyan & Donoho (2022) and Papyan et al. (2020).

Every panel plots a SPEC metric against the epoch, the train split as solid lines and the test split
(``test_<name>`` columns) dashed in the same colour, with the terminal phase of training (TPT,
summary.json ``tpt_epoch``) marked by a vertical line. A panel whose columns are all missing is
skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ncmse.report.style import (
    TPT_COLOUR,
    FigureFile,
    colour,
    draw_log_series,
    layout_figure,
    legend_below,
    log_floor,
    mark_floor,
    metric_label,
    save_figure,
    set_log_y,
)
from ncmse.rundir.format import snr_columns
from ncmse.rundir.reader import Run

__all__ = ["Series", "Panel", "TRAIN_PANELS", "derived_columns", "plot_train_run"]


@dataclass(frozen=True)
class Series:
    """One curve: a column of the train split and its test counterpart.

    Parameters
    ----------
    column : str
        Train-split column (SPEC name).
    label : str
        Legend entry of the train curve.
    test_column : str or None
        Test-split column; ``None`` means ``"test_" + column``.
    test_label : str or None
        Legend entry of the test curve; ``None`` means ``label + " (test)"``.
    """

    column: str
    label: str
    test_column: str | None = None
    test_label: str | None = None

    def test(self) -> tuple[str, str]:
        """The test column and its legend entry."""
        return (
            self.test_column or f"test_{self.column}",
            self.test_label or f"{self.label} (test)",
        )


@dataclass(frozen=True)
class Panel:
    """A single-axes figure: a few series against the epoch."""

    name: str
    title: str
    ylabel: str
    series: tuple[Series, ...]
    log: bool
    caption: str


def _s(column: str, test_column: str | None = None, test_label: str | None = None) -> Series:
    return Series(column, metric_label(column), test_column, test_label)


#: Panels of a training run, in the order of the paper's figures.
TRAIN_PANELS: tuple[Panel, ...] = (
    Panel(
        "error",
        "Training and test error",
        "error (fraction misclassified)",
        (_s("train_error", "test_error", "test error = 1 − test_accuracy"),),
        False,
        "Training error reaches zero at the start of the terminal phase of training (TPT).",
    ),
    Panel(
        "objective",
        "Training objective",
        "objective (log scale)",
        (_s("objective", "test_objective", "test objective"),),
        True,
        "The criterion the run optimised (cross-entropy for a CE run, the configured MSE "
        "otherwise), averaged over the split, weight decay excluded (SPEC §2 objective).",
    ),
    Panel(
        "nc1",
        "NC1: within-class variability collapse",
        "nc1 (log scale)",
        (_s("nc1"),),
        True,
        "nc1 = Tr(Σ_W Σ_B†)/C falls by orders of magnitude and keeps falling after the TPT.",
    ),
    Panel(
        "nc1_variants",
        "NC1 variants",
        "value (log scale)",
        (_s("nc1_trace_ratio"), _s("cdnv")),
        True,
        "Other within-class variability measures: Tr Σ_W / Tr Σ_B and the CDNV; both → 0.",
    ),
    Panel(
        "equinorm",
        "NC2: equinorm",
        "Std/Avg of norms (log scale)",
        (_s("equinorm_means"), _s("equinorm_classifier")),
        True,
        "Coefficient of variation of the centred class-mean norms and of the classifier-row "
        "norms; → 0 under collapse.",
    ),
    Panel(
        "equiangular",
        "NC2: equiangularity",
        "Std of cosines (log scale)",
        (_s("equiangular_means"), _s("equiangular_classifier")),
        True,
        "Standard deviation of the pairwise cosines; → 0 when all angles are equal.",
    ),
    Panel(
        "maxangle",
        "NC2: maximal angle",
        "Avg |cos + 1/(C−1)| (log scale)",
        (_s("maxangle_means"), _s("maxangle_classifier")),
        True,
        "Distance of the pairwise cosines from −1/(C−1), the simplex-ETF value; → 0.",
    ),
    Panel(
        "nc3",
        "NC3: self-duality",
        "nc3 (log scale)",
        (_s("nc3"),),
        True,
        "Distance between the normalised classifier and the normalised centred class means; → 0.",
    ),
    Panel(
        "nc4",
        "NC4: nearest class centre",
        "nc4 (log scale)",
        (_s("nc4"),),
        True,
        "Fraction of samples where the classifier's decision differs from the nearest class "
        "mean; → 0.",
    ),
    Panel(
        "etf_error",
        "ETF Gram error",
        "ETF error (log scale)",
        (_s("etf_error_means"), _s("etf_error_wm")),
        True,
        "Distance of the normalised Gram matrices M̄ᵀM̄ and W M̄ from the simplex ETF; → 0.",
    ),
)


def derived_columns(run: Run) -> dict[str, np.ndarray]:
    """The run's numeric columns plus the derived ones the figures need.

    Added when absent: ``test_error = 1 − test_accuracy``, ``loss_perp_ratio = loss_perp / loss``
    (and the test versions), ``snr_ratio = ω_1 / ω_{C−1}`` (and ``test_snr_ratio``).
    """
    cols = dict(run.columns)
    if "test_error" not in cols and "test_accuracy" in cols:
        cols["test_error"] = 1.0 - cols["test_accuracy"]
    for prefix in ("", "test_"):
        ratio, perp, loss = f"{prefix}loss_perp_ratio", f"{prefix}loss_perp", f"{prefix}loss"
        if ratio not in cols and perp in cols and loss in cols:
            with np.errstate(divide="ignore", invalid="ignore"):
                cols[ratio] = cols[perp] / cols[loss]
        snr = snr_columns(cols, test=bool(prefix))
        if len(snr) >= 2 and f"{prefix}snr_ratio" not in cols:
            with np.errstate(divide="ignore", invalid="ignore"):
                cols[f"{prefix}snr_ratio"] = cols[snr[0]] / cols[snr[-1]]
    return cols


def plot_train_run(
    run: Run, out_dir: Path, *, formats: Sequence[str] = ("png", "pdf", "svg")
) -> list[FigureFile]:
    """Draw every panel of a training run that its columns allow.

    Parameters
    ----------
    run : Run
        A loaded training run.
    out_dir : Path
        Where the figures go (``RUN_DIR/figures`` in the run report).
    formats : sequence of str
        File formats to write for each figure.

    Returns
    -------
    list of FigureFile
        The figures written, in display order; empty when the run has no measurements yet.
    """
    if run.num_rows == 0:
        return []
    cols = derived_columns(run)
    x, xlabel = run.x_axis()
    context = _Context(cols, x, xlabel, run.tpt_epoch, run.label)
    written: list[FigureFile] = []
    for panel in TRAIN_PANELS[:1]:
        written.extend(_single_panel(context, panel, out_dir, formats))
    written.extend(_decomposition(context, out_dir, formats))
    for panel in TRAIN_PANELS[1:]:
        written.extend(_single_panel(context, panel, out_dir, formats))
    written.extend(_snr(context, out_dir, formats))
    return written


@dataclass(frozen=True)
class _Context:
    cols: dict[str, np.ndarray]
    x: np.ndarray
    xlabel: str
    tpt: float | None
    run_label: str

    def has(self, name: str) -> bool:
        values = self.cols.get(name)
        return values is not None and bool(np.isfinite(values).any())


def _plot_series(
    ax: Axes, ctx: _Context, series: Sequence[Series], log: bool, floor: float | None = None
) -> bool:
    """Draw the series present (on a log axis, values ≤ 0 at ``floor``); return whether any
    was drawn."""
    drawn = False
    for i, s in enumerate(series):
        test_column, test_label = s.test()
        for column, label, style in ((s.column, s.label, "-"), (test_column, test_label, "--")):
            if not ctx.has(column):
                continue
            kwargs = dict(ls=style, marker="o", markersize=3, lw=1.6, color=colour(i), label=label)
            y = ctx.cols[column].astype(float)
            if log:
                drawn |= draw_log_series(ax, ctx.x, y, floor, **kwargs)
                continue
            mask = np.isfinite(y) & np.isfinite(ctx.x)
            if mask.any():
                ax.plot(ctx.x[mask], y[mask], **kwargs)
                drawn = True
    return drawn


def _panel_figure(ncols: int = 1) -> tuple[Figure, np.ndarray]:
    """A figure of ``ncols`` panels side by side, laid out so that no text is clipped."""
    fig = layout_figure(6.4 * ncols if ncols > 1 else 7.0, 5.0)
    return fig, fig.subplots(1, ncols, squeeze=False)


def _floor(ctx: _Context, series: Sequence[Series]) -> float | None:
    columns = [c for s in series for c in (s.column, s.test()[0]) if ctx.has(c)]
    return log_floor([ctx.cols[c] for c in columns])


def _finish_axes(
    ax: Axes, ctx: _Context, *, title: str, ylabel: str, log: bool, floor: float | None = None
) -> None:
    if log and any(line.get_ydata().size for line in ax.get_lines()):
        set_log_y(ax)
        mark_floor(ax, floor)
    if ctx.tpt is not None:
        ax.axvline(ctx.tpt, color=TPT_COLOUR, ls=":", lw=1.4, label=f"TPT (epoch {ctx.tpt:g})")
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(ctx.xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    legend_below(ax)


def _single_panel(
    ctx: _Context, panel: Panel, out_dir: Path, formats: Sequence[str]
) -> list[FigureFile]:
    if not any(ctx.has(s.column) or ctx.has(s.test()[0]) for s in panel.series):
        return []
    # A metric that is exactly zero everywhere cannot be drawn on a log axis.
    positive = any(
        bool((ctx.cols[c][np.isfinite(ctx.cols[c])] > 0).any())
        for s in panel.series
        for c in (s.column, s.test()[0])
        if ctx.has(c)
    )
    log = panel.log and positive
    floor = _floor(ctx, panel.series) if log else None
    fig, axes = _panel_figure()
    ax = axes[0, 0]
    _plot_series(ax, ctx, panel.series, log, floor)
    title = f"{panel.title}\n{ctx.run_label}"
    _finish_axes(ax, ctx, title=title, ylabel=panel.ylabel, log=log, floor=floor)
    caption = panel.caption
    if floor is not None:
        caption += " Measurements equal to 0 are drawn at the marked floor of the log axis."
    return [
        save_figure(fig, out_dir, panel.name, title=panel.title, caption=caption, formats=formats)
    ]


def _decomposition(ctx: _Context, out_dir: Path, formats: Sequence[str]) -> list[FigureFile]:
    parts = [
        Series(c, f"{c}: {symbol}")
        for c, symbol in (
            ("loss", "L"),
            ("loss_nc1", "L_NC1"),
            ("loss_nc23", "L_NC2/3"),
            ("loss_perp", "L_⊥"),
        )
    ]
    if not any(ctx.has(s.column) for s in parts):
        return []
    fig, axes = _panel_figure(2)
    left, right = axes[0, 0], axes[0, 1]
    _plot_series(left, ctx, parts, log=True)
    _finish_axes(
        left,
        ctx,
        title="MSE decomposition L = L_NC1 + L_NC2/3 + L_⊥",
        ylabel="loss (log scale)",
        log=True,
    )
    ratio = (_s("loss_perp_ratio"),)
    if _plot_series(right, ctx, ratio, log=True):
        _finish_axes(right, ctx, title="L_⊥ / L", ylabel="L_⊥ / L (log scale)", log=True)
    else:
        right.set_axis_off()
    fig.suptitle(ctx.run_label)
    caption = (
        "Left: the loss and its three parts (SPEC §3). Right: the share L_⊥/L of the distance "
        "from the central path; the paper finds it small and falling during MSE training."
    )
    return [
        save_figure(
            fig,
            out_dir,
            "loss_decomposition",
            title="MSE loss decomposition",
            caption=caption,
            formats=formats,
        )
    ]


def _snr(ctx: _Context, out_dir: Path, formats: Sequence[str]) -> list[FigureFile]:
    names = [n for n in snr_columns(ctx.cols) if ctx.has(n)]
    if not names:
        return []
    fig, axes = _panel_figure(2)
    left, right = axes[0, 0], axes[0, 1]
    # Many curves: a sequential colour-blind-safe colour map rather than the line cycle.

    cmap, norm = colormaps["viridis"], Normalize(0, max(len(names) - 1, 1))
    for j, name in enumerate(names):
        y = np.where(ctx.cols[name] > 0, ctx.cols[name], np.nan)
        left.plot(
            ctx.x,
            y,
            "-",
            marker="o",
            markersize=2.5,
            lw=1.3,
            color=cmap(norm(j)),
            label=f"ω_{j + 1} ({name})",
        )
    _finish_axes(
        left,
        ctx,
        title="SNR singular values ω_j of Σ_W^(−1/2) M̄",
        ylabel="ω_j (log scale)",
        log=True,
    )
    ratio = (Series("snr_ratio", f"ω_1/ω_{len(names)} (snr_1/snr_{len(names)})"),)
    if len(names) >= 2 and _plot_series(right, ctx, ratio, log=True):
        _finish_axes(
            right,
            ctx,
            title="Equalisation: ω_max / ω_min → 1",
            ylabel="ω_max / ω_min (log scale)",
            log=True,
        )
        right.axhline(1.0, color="black", lw=0.8, alpha=0.5)
    else:
        right.set_axis_off()
    fig.suptitle(ctx.run_label)
    caption = (
        "The singular values of the whitened class means (snr_1 … snr_{C−1}); under collapse "
        "they all grow and equalise, so their ratio tends to 1."
    )
    return [
        save_figure(
            fig,
            out_dir,
            "snr",
            title="Signal-to-noise singular values",
            caption=caption,
            formats=formats,
        )
    ]
