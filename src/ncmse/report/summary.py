"""The run at a glance: one figure of 2 × 3 panels that opens the run report.

Panels (training-split measurements unless said): training and test error with the TPT; L and its
three parts L_NC1, L_NC2/3, L_⊥ with the share L_⊥/L; nc1 and its variants; NC2–NC4 of the class
means (equinorm, equiangularity, max-angle, nc3, nc4); the ω spectrum over epochs; the
central-path fit (measured and fitted ω_j against flow time τ, learning-rate drops marked; SPEC
§9). Saved as ``figures/summary.{png,pdf,svg}``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from ncmse.report.figures import derived_columns
from ncmse.report.style import (
    TPT_COLOUR,
    FigureFile,
    colour,
    draw_log_series,
    layout_figure,
    log_floor,
    mark_floor,
    save_figure,
    set_log_y,
)
from ncmse.rundir.format import snr_columns
from ncmse.rundir.reader import Run
from ncmse.verdicts.central_path import LAW_SHORT, clock_of, fitted_omega, omega_table, verdict_word
from ncmse.verdicts.record import run_rows

__all__ = ["SUMMARY_NAME", "plot_run_summary"]

#: File stem of the summary figure in ``RUN_DIR/figures``.
SUMMARY_NAME = "summary"

#: (panel title, y label, log axis, ((column, legend entry, line style), ...))
_PANELS: tuple[tuple[str, str, bool, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "Error",
        "fraction misclassified",
        False,
        (("train_error", "training error", "-"), ("test_error", "test error", "--")),
    ),
    (
        "L = L_NC1 + L_NC2/3 + L_⊥",
        "loss, and L_⊥/L (log)",
        True,
        (
            ("loss", "L", "-"),
            ("loss_nc1", "L_NC1", "-"),
            ("loss_nc23", "L_NC2/3", "-"),
            ("loss_perp", "L_⊥", "-"),
            ("loss_perp_ratio", "L_⊥ / L", "--"),
        ),
    ),
    (
        "NC1: within-class variability",
        "value (log)",
        True,
        (
            ("nc1", "nc1 = Tr(Σ_W Σ_B†)/C", "-"),
            ("nc1_trace_ratio", "Tr Σ_W / Tr Σ_B", "-"),
            ("cdnv", "CDNV", "-"),
            ("test_nc1", "nc1 (test)", "--"),
        ),
    ),
    (
        "NC2–NC4 of the class means",
        "value (log)",
        True,
        (
            ("equinorm_means", "equinorm", "-"),
            ("equiangular_means", "equiangularity", "-"),
            ("maxangle_means", "max-angle", "-"),
            ("nc3", "nc3 (self-duality)", "-"),
            ("nc4", "nc4 (NCC mismatch)", "-"),
        ),
    ),
)


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
    fig = layout_figure(12.5, 7.8)
    axes = fig.subplots(2, 3, squeeze=False)
    floors = []
    for ax, (title, ylabel, log, series) in zip(axes.flat, _PANELS):
        floors.append(_metric_panel(ax, cols, x, series, title=title, ylabel=ylabel, log=log))
        _finish(ax, xlabel, run.tpt_epoch)
    _spectrum_panel(axes[1, 1], cols, x)
    _finish(axes[1, 1], xlabel, run.tpt_epoch)
    _central_path_panel(axes[1, 2], run, fits)
    fig.suptitle(f"Run summary — {run.label}", fontsize="large")
    caption = (
        "Top: training (solid) and test (dashed) error; the MSE loss L and its parts L_NC1, "
        "L_NC2/3, L_⊥ with the share L_⊥/L (dashed); nc1 and its variants. Bottom: NC2–NC4 of "
        "the class means; the SNR singular values ω_j; the central-path fit (SPEC §9): measured "
        "ω_j (markers) and the fitted law (lines) against flow time τ. Dotted vertical line: "
        "TPT; dashed: learning-rate drops."
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
    floor = log_floor([cols[c] for c, _, _ in present]) if log else None
    positive = any((np.asarray(cols[c]) > 0).any() for c, _, _ in present)
    log = log and positive
    for i, (column, label, style) in enumerate(present):
        kwargs = dict(color=colour(i), ls=style, lw=1.5, marker="o", ms=2.5, label=label)
        if log:
            draw_log_series(ax, x, cols[column], floor, **kwargs)
        else:
            mask = np.isfinite(cols[column]) & np.isfinite(x)
            ax.plot(x[mask], cols[column][mask], **kwargs)
    if log:
        set_log_y(ax)
        mark_floor(ax, floor)
    return floor


def _spectrum_panel(ax: Axes, cols: Mapping[str, np.ndarray], x: np.ndarray) -> None:
    names = [n for n in snr_columns(dict(cols)) if _finite(cols.get(n))]
    ax.set_title("SNR spectrum ω_j of Σ_W^(−1/2) M̄", fontsize="medium")
    ax.set_ylabel("ω_j (log)")
    if not names:
        _empty(ax, "ω not measured")
        return
    cmap, norm = colormaps["viridis"], Normalize(0, max(len(names) - 1, 1))
    for j, name in enumerate(names):
        label = None
        if j in (0, len(names) - 1):
            label = f"ω_{j + 1}" + (" (largest)" if j == 0 else " (smallest)")
        draw_log_series(ax, x, cols[name], None, color=cmap(norm(j)), lw=1.3, label=label)
    set_log_y(ax)


def _central_path_panel(ax: Axes, run: Run, fits: Sequence[Mapping[str, Any]]) -> None:
    """Measured ω_j (markers) and the first fitted law (lines) against flow time."""
    rows = run_rows(run)
    epochs, omega = omega_table(rows)
    clock = clock_of(rows, run.config)
    ax.set_ylabel("ω_j (log)")
    fit = next((f for f in fits if f.get("kappa") is not None), None)
    measured = bool(omega.size) and bool(np.isfinite(omega).any())
    if clock.tau is None or not measured:
        ax.set_title("Central path (SPEC §9)", fontsize="medium")
        _empty(ax, "ω not measured" if not measured else _wrap(f"no flow time: {clock.reason}"))
        return
    keep = np.isfinite(clock.tau) & np.any(np.isfinite(omega), axis=1)
    tau, epochs, omega = clock.tau[keep], epochs[keep], omega[keep]
    k = omega.shape[1]
    cmap, norm = colormaps["viridis"], Normalize(0, max(k - 1, 1))
    for j in range(k):
        y = np.where(omega[:, j] > 0, omega[:, j], np.nan)
        ax.plot(tau, y, "o", ms=2.5, color=cmap(norm(j)), alpha=0.85)
    ax.plot([], [], "o", ms=3, color="grey", label="measured ω_j")
    if fit is not None:
        name = str(fit.get("law"))
        start = int(np.nonzero(epochs >= float(fit["e0"]))[0][0])
        elapsed = np.unique(np.r_[np.linspace(0.0, tau[-1] - tau[start], 300), tau - tau[start]])
        elapsed = elapsed[elapsed >= 0]
        pred = fitted_omega(fit, elapsed, omega[start])
        for j in range(k):
            ax.plot(tau[start] + elapsed, pred[:, j], "-", lw=1.1, color=cmap(norm(j)))
        ax.plot([], [], "-", color="grey", label=f"{LAW_SHORT.get(name, name)}, fitted κ")
        residual = math.exp(float(fit["rms_log_residual"]))
        ax.set_title(
            f"Central path: {verdict_word(fit)} (residual ×{residual:#.3g})", fontsize="medium"
        )
        ax.axvline(tau[start], color=TPT_COLOUR, ls=":", lw=1.3, label="TPT measurement")
    else:
        reason = next((str(f.get("reason") or "") for f in fits), "no fit")
        ax.set_title("Central path: no fit", fontsize="medium")
        ax.text(0.03, 0.03, _wrap(reason), transform=ax.transAxes, fontsize="x-small",
                color=TPT_COLOUR, va="bottom")  # fmt: skip
    for i, t in enumerate(clock.drop_tau):
        ax.axvline(float(t), color="grey", ls="--", lw=1.0, label="lr drops" if i == 0 else None)
    set_log_y(ax)
    ax.set_xlabel("flow time τ = Σ learning rate × steps")
    ax.grid(True, alpha=0.3)
    _legend(ax)


def _finish(ax: Axes, xlabel: str, tpt: float | None) -> None:
    if not ax.axison:
        return
    if tpt is not None:
        ax.axvline(tpt, color=TPT_COLOUR, ls=":", lw=1.3, label=f"TPT (epoch {tpt:g})")
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)
    _legend(ax)


def _legend(ax: Axes) -> None:
    """The panel's legend below its axes, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            fontsize="small",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.17),
            ncol=2 if max(len(label) for label in labels) > 14 else 3,
            handlelength=1.6,
            columnspacing=1.0,
            frameon=False,
        )


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=TPT_COLOUR)
    ax.set_axis_off()  # no axes, TPT line or legend on a panel without data


def _wrap(text: str, width: int = 44) -> str:
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)
