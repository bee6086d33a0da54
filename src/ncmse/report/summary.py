"""The run at a glance: one figure of 2 × 3 panels that opens the run report.

Panels (training-split measurements unless said): training and test error with the TPT; L and its
three parts L_NC1, L_NC2/3, L_⊥ with the share L_⊥/L; nc1 and its variants; NC2–NC4 of the class
means (equinorm, equiangularity, max-angle, nc3, nc4); the ω spectrum over epochs; the
central-path fit (measured and fitted ω_j against flow time τ, learning-rate drops marked; SPEC
§9). Saved as ``figures/summary.{png,pdf,svg}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from ncmse.report.central_path_figure import draw_fit_window, omega_track
from ncmse.report.figures import derived_columns
from ncmse.report.style import (
    TPT_COLOUR,
    FigureFile,
    colour,
    layout_figure,
    legend_below,
    plot_series,
    save_figure,
)
from ncmse.rundir.format import snr_columns
from ncmse.rundir.reader import Run

__all__ = ["SUMMARY_NAME", "plot_run_summary"]

#: File stem of the summary figure in ``RUN_DIR/figures``.
SUMMARY_NAME = "summary"

#: Metric panels in order: (title, y label, log axis).
_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("Error", "fraction misclassified", False),
    ("L = L_NC1 + L_NC2/3 + L_⊥", "loss, and L_⊥/L (log)", True),
    ("NC1: within-class variability", "value (log)", True),
    ("NC2–NC4 of the class means", "value (log)", True),
)

#: The curves of each metric panel (by index in :data:`_PANELS`): column, legend entry, style.
_SERIES: tuple[tuple[tuple[str, str, str], ...], ...] = (
    (("train_error", "training error", "-"), ("test_error", "test error", "--")),
    (("loss", "L", "-"), ("loss_nc1", "L_NC1", "-"), ("loss_nc23", "L_NC2/3", "-"),
     ("loss_perp", "L_⊥", "-"), ("loss_perp_ratio", "L_⊥ / L", "--")),
    (("nc1", "nc1 = Tr(Σ_W Σ_B†)/C", "-"), ("nc1_trace_ratio", "Tr Σ_W / Tr Σ_B", "-"),
     ("cdnv", "CDNV", "-"), ("test_nc1", "nc1 (test)", "--")),
    (("equinorm_means", "equinorm", "-"), ("equiangular_means", "equiangularity", "-"),
     ("maxangle_means", "max-angle", "-"), ("nc3", "nc3 (self-duality)", "-"),
     ("nc4", "nc4 (NCC mismatch)", "-")),
)  # fmt: skip


def plot_run_summary(
    run: Run,
    fits: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    formats: Sequence[str] = ("png", "pdf", "svg"),
) -> list[FigureFile]:
    """Draw the 2 × 3 summary figure of a training run.

    Parameters
    ----------
    run : Run
        A loaded training run.
    fits : sequence of mapping
        Its central-path records (:func:`ncmse.verdicts.run_central_path`); the first law with
        a fitted κ is drawn.
    out_dir : Path
        ``RUN_DIR/figures``.
    formats : sequence of str
        Files written (PNG, PDF and SVG by default).

    Returns
    -------
    list of FigureFile
        The summary figure, or nothing when the run has no measurement.
    """
    if run.num_rows == 0:
        return []
    cols = derived_columns(run)
    x, xlabel = run.x_axis()
    fig = layout_figure(12.5, 8.2)
    axes = fig.subplots(2, 3, squeeze=False)
    floors = []
    for ax, (title, ylabel, log), series in zip(axes.flat, _PANELS, _SERIES):
        floors.append(_metric_panel(ax, cols, x, series, title=title, ylabel=ylabel, log=log))
        _finish(ax, xlabel, run.tpt_epoch)
    _spectrum_panel(axes[1, 1], cols, x)
    _finish(axes[1, 1], xlabel, run.tpt_epoch)
    _central_path_panel(axes[1, 2], run, fits)
    fig.suptitle(f"Run summary — {run.label}", fontsize="large")
    caption = (
        "Top: training (solid) and test (dashed) error; the MSE loss L and its parts L_NC1, "
        "L_NC2/3, L_⊥ with the share L_⊥/L (dashed); nc1 and its variants. Bottom: NC2–NC4 of "
        "the class means; the SNR singular values ω_j; the central-path fit (SPEC §9) in its "
        "window: measured ω_j (markers) and the fitted law (lines) against the flow time since "
        "the TPT measurement, τ − τ(e0). Dotted vertical line: TPT; dashed: learning-rate drops."
    )
    if any(f is not None for f in floors):
        caption += " Measurements equal to 0 are drawn at the marked floor of the log axis."
    return [
        save_figure(
            fig,
            out_dir,
            SUMMARY_NAME,
            title="Run summary",
            caption=caption,
            formats=formats,
        )
    ]


def _finite(values: Any) -> bool:
    return values is not None and bool(np.isfinite(np.asarray(values, dtype=float)).any())


def _metric_panel(
    ax: Axes,
    cols: Mapping[str, np.ndarray],
    x: np.ndarray,
    series: Sequence[tuple[str, str, str]],
    *,
    title: str,
    ylabel: str,
    log: bool,
) -> float | None:
    """Draw the columns present; on a log axis zeros go to a marked floor (returned)."""
    present = [(c, label, style) for c, label, style in series if _finite(cols.get(c))]
    ax.set_title(title, fontsize="medium")
    ax.set_ylabel(ylabel)
    if not present:
        _empty(ax, "not measured")
        return None
    drawn = [
        (cols[column], dict(color=colour(i), ls=style, lw=1.5, marker="o", ms=2.5, label=label))
        for i, (column, label, style) in enumerate(present)
    ]
    return plot_series(ax, x, drawn, log=log)[1]


def _spectrum_panel(ax: Axes, cols: Mapping[str, np.ndarray], x: np.ndarray) -> None:
    names = [n for n in snr_columns(dict(cols)) if _finite(cols.get(n))]
    ax.set_title("SNR spectrum ω_j of Σ_W^(−1/2) M̄", fontsize="medium")
    ax.set_ylabel("ω_j (log)")
    if not names:
        _empty(ax, "ω not measured")
        return
    cmap, norm = colormaps["viridis"], Normalize(0, max(len(names) - 1, 1))
    series = []
    for j, name in enumerate(names):
        label = None
        if j in (0, len(names) - 1):
            label = f"ω_{j + 1}" + (" (largest)" if j == 0 else " (smallest)")
        series.append((cols[name], dict(color=cmap(norm(j)), lw=1.3, label=label)))
    plot_series(ax, x, series, log=True)


def _central_path_panel(ax: Axes, run: Run, fits: Sequence[Mapping[str, Any]]) -> None:
    """The fit window of the first fitted law (else the first law, with its reason)."""
    track = omega_track(run)
    if track is None or not fits:
        ax.set_title("Central path (SPEC §9)", fontsize="medium")
        _empty(ax, "ω not measured" if track is None else "no central-path record")
        return
    fit = next((f for f in fits if track.start(f) is not None), fits[0])
    if draw_fit_window(ax, track, fit, title="Central path (SPEC §9)\n"):
        legend_below(ax)


def _finish(ax: Axes, xlabel: str, tpt: float | None) -> None:
    if not ax.axison:
        return
    if tpt is not None:
        ax.axvline(tpt, color=TPT_COLOUR, ls=":", lw=1.3, label=f"TPT (epoch {tpt:g})")
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)
    legend_below(ax)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=TPT_COLOUR)
    ax.set_axis_off()  # no axes, TPT line or legend on a panel without data
