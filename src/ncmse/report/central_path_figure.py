"""The central-path figure of a training run: measured ω_j and the fitted laws (SPEC §9).

Top row, the whole run against flow time τ: the measured SNR singular values ω_j and their spread
ω_max/ω_min, with the TPT measurement, the learning-rate drops and the fit window (τ ≥ τ(e0))
marked. Bottom row, the fit window alone against τ − τ(e0), the flow time since the TPT
measurement — the part the fit uses, which the whole run's axis squeezes into its last few per
cent: per law, the measured ω_j (markers) and the law's ω_j with the fitted κ (lines), and
ω_max/ω_min measured and predicted by each law. The bottom-row panel of a law is also the
central-path panel of the run summary (:func:`draw_fit_window`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from ncmse.report.style import (
    TPT_COLOUR,
    FigureFile,
    colour,
    figure_legend_below,
    layout_figure,
    save_figure,
    set_log_y,
)
from ncmse.verdicts.central_path import (
    LAW_SHORT,
    clock_of,
    fitted_omega,
    omega_table,
    verdict_word,
)
from ncmse.verdicts.claims import tpt_epoch_of
from ncmse.verdicts.record import run_rows

__all__ = ["OmegaTrack", "draw_fit_window", "omega_track", "plot_central_path"]

#: Label of the abscissa of the fit window.
ELAPSED_LABEL = "τ − τ(e0): flow time since the TPT measurement"
_TAU_LABEL = "flow time τ = Σ learning rate × steps"
_WINDOW_COLOUR = "#e8e8e8"


@dataclass(frozen=True)
class OmegaTrack:
    """The measured ω of a run on its clock.

    Attributes
    ----------
    epochs : ndarray, shape (T,)
        Measurement epochs with some finite ω.
    omega : ndarray, shape (T, k)
        ω_j measured there (NaN where missing).
    x : ndarray, shape (T,)
        Flow time τ at those epochs, or the epochs when the run has no flow time.
    flow_time : bool
        Whether ``x`` is flow time.
    drops : tuple of float
        Learning-rate drops on the ``x`` axis.
    reason : str or None
        Why the run has no flow time.
    tpt : float or None
        The run's TPT epoch.
    """

    epochs: np.ndarray
    omega: np.ndarray
    x: np.ndarray
    flow_time: bool
    drops: tuple[float, ...]
    reason: str | None
    tpt: float | None

    def start(self, fit: Mapping[str, Any]) -> int | None:
        """Index of the fit's first measurement (epoch e0) when the law was fitted on flow
        time, else None."""
        if fit.get("kappa") is None or not self.flow_time or fit.get("e0") is None:
            return None
        after = np.nonzero(self.epochs >= float(fit["e0"]))[0]
        return int(after[0]) if after.size else None

    def colours(self) -> list[Any]:
        """One viridis colour per ω_j."""
        k = self.omega.shape[1]
        cmap, norm = colormaps["viridis"], Normalize(0, max(k - 1, 1))
        return [cmap(norm(j)) for j in range(k)]


def omega_track(run: Any) -> OmegaTrack | None:
    """The measured ω of a loaded training run on its flow-time clock; None without ω."""
    rows = run_rows(run)
    epochs, omega = omega_table(rows)
    clock = clock_of(rows, run.config)
    x = clock.tau if clock.tau is not None else epochs
    if not omega.size:
        return None
    keep = np.isfinite(x) & np.any(np.isfinite(omega), axis=1)
    if not keep.any():
        return None
    flow = clock.tau is not None
    drops = clock.drop_tau if flow else tuple(float(m) for m in clock.drop_epochs)
    tpt = run.tpt_epoch if "tpt_epoch" in run.summary else tpt_epoch_of(rows)
    return OmegaTrack(epochs[keep], omega[keep], x[keep], flow, tuple(map(float, drops)),
                      clock.reason, tpt)  # fmt: skip


def _positive(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, values, np.nan)


def _ratio(omega: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmax(omega, axis=1) / np.nanmin(omega, axis=1)


def _law_curve(track: OmegaTrack, fit: Mapping[str, Any], start: int) -> tuple[np.ndarray, ...]:
    """(τ − τ(e0), the law's ω_j) on a fine grid through the measurements of the window."""
    measured = track.x[start:] - track.x[start]
    elapsed = np.unique(np.r_[np.linspace(0.0, measured[-1], 300), measured])
    return elapsed, fitted_omega(fit, elapsed, track.omega[start])


def _mark_drops(ax: Axes, drops: Sequence[float], low: float = -math.inf) -> None:
    """Dashed lines at the learning-rate drops after ``low``, one legend entry for all."""
    for i, at in enumerate(a for a in drops if a > low):
        ax.axvline(at, color="grey", ls="--", lw=1.0,
                   label="learning-rate drops" if i == 0 else None)  # fmt: skip


def draw_fit_window(ax: Axes, track: OmegaTrack, fit: Mapping[str, Any], *, title: str) -> bool:
    """Measured ω_j (markers) and the law's ω_j with its fitted κ (lines) against τ − τ(e0),
    learning-rate drops in the window marked; the reason in words when the law has no fit.

    Returns whether a fit was drawn.
    """
    name = str(fit.get("law"))
    law = LAW_SHORT.get(name, name)
    start = track.start(fit)
    if start is None:
        reason = fit.get("reason") or (track.reason if not track.flow_time else "no fit")
        ax.set_title(f"{title}{law}: no fit", fontsize="medium")
        ax.text(0.5, 0.5, _wrap(str(reason)), ha="center", va="center", transform=ax.transAxes,
                color=TPT_COLOUR, fontsize="small")  # fmt: skip
        ax.set_axis_off()
        return False
    origin = track.x[start]
    elapsed, pred = _law_curve(track, fit, start)
    for j, c in enumerate(track.colours()):
        ax.plot(track.x[start:] - origin, _positive(track.omega[start:, j]), "o", ms=3.5,
                color=c, alpha=0.9)  # fmt: skip
        ax.plot(elapsed, pred[:, j], "-", lw=1.2, color=c)
    ax.plot([], [], "o", ms=3.5, color="grey", label="ω_j measured (colour: j)")
    ax.plot([], [], "-", color="grey", label="law with fitted κ")
    _mark_drops(ax, [d - origin for d in track.drops], low=0.0)
    residual = math.exp(float(fit["rms_log_residual"]))
    ax.set_title(f"{title}{law}: {verdict_word(fit)} (×{residual:#.3g})", fontsize="medium")
    set_log_y(ax)
    ax.set_xlabel(ELAPSED_LABEL)
    ax.set_ylabel("ω_j (log scale)")
    ax.grid(True, alpha=0.3)
    return True


def plot_central_path(
    run: Any,
    fits: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    formats: Sequence[str] = ("png", "pdf", "svg"),
) -> list[FigureFile]:
    """Measured vs fitted ω_j and ω_max/ω_min, the whole run and the fit window (SPEC §9).

    One bottom-row panel per central-path record in ``fits``
    (:func:`ncmse.verdicts.run_central_path`), written as ``out_dir/central_path.<format>``
    for each of ``formats``. Returns that figure, or nothing when the run has no ω measured.
    """
    track = omega_track(run)
    if track is None:
        return []
    # the fit window's row only when some law was fitted; else the reasons go in the title
    fitted = any(track.start(fit) is not None for fit in fits)
    laws = [f"law{i}" for i in range(len(fits))] if fitted else []
    mosaic = [["run"] * max(len(laws), 1) + ["ratio"]]
    if laws:
        mosaic.append([*laws, "window_ratio"])
    fig = layout_figure(4.6 * max(len(mosaic[0]), 3), 3.4 * len(mosaic) + 1.1)
    axes = fig.subplot_mosaic(mosaic)
    _whole_run(axes["run"], axes["ratio"], track, fits)
    drawn = []
    for index, fit in enumerate(fits if fitted else ()):
        if draw_fit_window(axes[f"law{index}"], track, fit, title=""):
            drawn.append((index, fit))
    if laws:
        _window_ratio(axes["window_ratio"], track, drawn)
    figure_legend_below(fig)
    title = f"Central path (SPEC §9) — {run.label}"
    if fits and not fitted:
        reasons = dict.fromkeys(str(f.get("reason") or track.reason or "") for f in fits)
        title += "\n" + _wrap("no fit: " + "; ".join(r for r in reasons if r), 110)
    fig.suptitle(title)
    caption = (
        "Top: the whole run against flow time τ = Σ learning rate over the optimiser steps — "
        "the measured SNR singular values ω_j (one colour per j) and their spread ω_max/ω_min; "
        "shaded: the fit window, from the TPT measurement (epoch e0) on. Bottom: the fit "
        "window against τ − τ(e0): the measured ω_j (markers) and the closed-form ω dynamics "
        "of the unconstrained features model started from the measured ω at e0 with one "
        "fitted time scale κ (lines), for the projected flow (SPEC §5.3) and "
        "step-then-renormalise (SPEC §5.4), the verdict and the rms residual as a factor in "
        "the titles; right, ω_max/ω_min measured and predicted by each law. Dashed vertical "
        "lines: learning-rate drops; dotted: the TPT measurement."
    )
    if not track.flow_time:
        caption += f" This run has no flow time ({track.reason}): the top row is drawn on epochs."
    return [
        save_figure(
            fig,
            out_dir,
            "central_path",
            title="Central path: measured vs fitted ω against flow time",
            caption=caption,
            formats=formats,
        )
    ]


def _whole_run(ax: Axes, ratio_ax: Axes, track: OmegaTrack, fits: Sequence[Mapping]) -> None:
    """The top row: ω_j and ω_max/ω_min over the whole run, the fit window shaded."""
    for j, c in enumerate(track.colours()):
        ax.plot(track.x, _positive(track.omega[:, j]), "-o", ms=2.5, lw=0.8, color=c)
    ratio_ax.plot(track.x, _ratio(track.omega), "o", ms=3, color="black",
                  label="ω_max/ω_min measured")  # fmt: skip
    ratio_ax.axhline(1.0, color="black", lw=0.8, alpha=0.5)
    starts = [s for s in (track.start(f) for f in fits) if s is not None]
    xlabel = _TAU_LABEL if track.flow_time else f"epoch ({track.reason})"
    for a, title in ((ax, "ω_j over the whole run"), (ratio_ax, "ω_max / ω_min over the run")):
        if starts:
            a.axvspan(track.x[min(starts)], track.x[-1], color=_WINDOW_COLOUR, zorder=0,
                      label="fit window (τ ≥ τ(e0))")  # fmt: skip
        if track.tpt is not None:
            after = np.nonzero(track.epochs >= float(track.tpt))[0]
            if after.size:
                e0 = track.epochs[after[0]]
                a.axvline(track.x[after[0]], color=TPT_COLOUR, ls=":", lw=1.3,
                          label=f"TPT measurement e0 (epoch {e0:g})")  # fmt: skip
        _mark_drops(a, track.drops)
        set_log_y(a)
        a.set_title(title, fontsize="medium")
        a.set_xlabel(_wrap(xlabel, 60))
        a.grid(True, alpha=0.3)
    ax.set_ylabel("ω_j (log scale)")
    ratio_ax.set_ylabel("ω_max / ω_min (log scale)")


def _window_ratio(ax: Axes, track: OmegaTrack, drawn: Sequence[tuple[int, Mapping]]) -> None:
    """ω_max/ω_min in the fit window: measured and predicted by each fitted law."""
    if not drawn:
        ax.set_axis_off()
        return
    start = track.start(drawn[0][1])
    origin = track.x[start]
    ax.plot(track.x[start:] - origin, _ratio(track.omega[start:]), "o", ms=3.5, color="black",
            label="ω_max/ω_min measured")  # fmt: skip
    for index, fit in drawn:
        name = str(fit.get("law"))
        elapsed, pred = _law_curve(track, fit, track.start(fit))
        ax.plot(elapsed, _ratio(pred), "-", lw=1.6, color=colour(index),
                label=f"ω_max/ω_min of the {LAW_SHORT.get(name, name)} law")  # fmt: skip
    _mark_drops(ax, [d - origin for d in track.drops], low=0.0)
    set_log_y(ax)
    ax.set_title("ω_max / ω_min in the fit window", fontsize="medium")
    ax.set_xlabel(ELAPSED_LABEL)
    ax.set_ylabel("ω_max / ω_min (log scale)")
    ax.grid(True, alpha=0.3)


def _wrap(text: str, width: int = 44) -> str:
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)
