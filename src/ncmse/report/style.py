"""Colours, labels and file output shared by every report figure.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with an explicit Agg canvas, never
through ``pyplot``: no display is needed and the global backend of the caller is left alone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ncmse.rundir.atomic import atomic_write_bytes

__all__ = [
    "OKABE_ITO",
    "LINE_COLOURS",
    "LOSS_COLOURS",
    "TPT_COLOUR",
    "METRIC_LABELS",
    "FigureFile",
    "colour",
    "loss_colour",
    "loss_display",
    "loss_key",
    "metric_label",
    "new_figure",
    "save_figure",
    "set_log_y",
]

#: The Okabe–Ito palette (Okabe & Ito 2008), distinguishable under the common colour-vision
#: deficiencies.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Order in which series take colours; yellow last because it is faint on white.
LINE_COLOURS: tuple[str, ...] = tuple(
    OKABE_ITO[k]
    for k in (
        "blue",
        "vermillion",
        "bluish_green",
        "orange",
        "reddish_purple",
        "sky_blue",
        "black",
        "yellow",
    )
)

#: Fixed colours of the two losses the paper compares, so that every figure agrees.
LOSS_COLOURS: dict[str, str] = {"mse": OKABE_ITO["blue"], "ce": OKABE_ITO["vermillion"]}

#: Colour of the terminal-phase-of-training marker.
TPT_COLOUR = "#555555"

_LOSS_ALIASES: dict[str, str] = {
    "mse": "mse",
    "ce": "ce",
    "cross_entropy": "ce",
    "crossentropy": "ce",
    "cross-entropy": "ce",
}

#: SPEC §2/§3 names -> a short definition used in axis labels, legends and tables.
METRIC_LABELS: dict[str, str] = {
    "train_error": "training error (fraction misclassified)",
    "accuracy": "accuracy",
    "objective": "training criterion as optimised (CE for a CE run; weight decay excluded)",
    "loss": "L (MSE loss, SPEC §3 convention)",
    "nc1": "Tr(Σ_W Σ_B†)/C",
    "nc1_unnormalized": "Tr(Σ_W Σ_B†)",
    "nc1_trace_ratio": "Tr Σ_W / Tr Σ_B",
    "cdnv": "class-distance normalised variance",
    "equinorm_means": "Std/Avg of ‖μ_c − μ_G‖",
    "equinorm_classifier": "Std/Avg of ‖w_c‖",
    "equiangular_means": "Std of cos(μ_c − μ_G, μ_c' − μ_G)",
    "equiangular_classifier": "Std of cos(w_c, w_c')",
    "maxangle_means": "Avg |cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)|",
    "maxangle_classifier": "Avg |cos(w_c, w_c') + 1/(C−1)|",
    "nc3": "‖Wᵀ/‖W‖_F − M̄/‖M̄‖_F‖_F²",
    "nc4": "fraction where NCC ≠ argmax(Wh + b)",
    "snr": "singular values ω_j of Σ_W^(−1/2) M̄",
    "etf_error_means": "‖G/‖G‖_F − ETF‖_F, G = M̄ᵀM̄",
    "etf_error_wm": "‖G/‖G‖_F − ETF‖_F, G = W M̄",
    "loss_nc1": "L_NC1",
    "loss_nc23": "L_NC2/3",
    "loss_perp": "L_⊥ (distance from the central path)",
    "loss_ls": "L_LS = L_NC1 + L_NC2/3",
    "loss_perp_ratio": "L_⊥ / L",
    "lam": "λ used in the decomposition",
    "num_samples": "number of samples measured",
    "num_classes": "number of classes C measured",
    "balanced": "measured set balanced",
    "nc4_method": "how nc4 was computed",
    "num_classes_excluded": "classes left out (fewer than min_samples samples)",
    "num_samples_excluded": "samples of the classes left out",
    "lr": "learning rate",
    "wall_time": "wall-clock time (s)",
}


@dataclass(frozen=True)
class FigureFile:
    """One figure written to disk, in PNG and (usually) SVG.

    Parameters
    ----------
    name : str
        File stem, e.g. ``"nc1"``.
    title : str
        Human-readable title, shown above the figure in the HTML report.
    caption : str
        One or two sentences saying what the figure shows and what collapse looks like.
    png : Path or None
        The PNG file, if one was written.
    svg : Path or None
        The SVG file, if one was written.
    """

    name: str
    title: str
    caption: str
    png: Path | None
    svg: Path | None


def metric_label(name: str) -> str:
    """Axis/legend label ``"name — definition"`` for a SPEC metric name.

    Parameters
    ----------
    name : str
        A SPEC name, optionally with a ``test_`` prefix.

    Returns
    -------
    str
        The SPEC name followed by its definition when one is known, else the name alone.
    """
    base = name[5:] if name.startswith("test_") else name
    definition = METRIC_LABELS.get(base)
    return f"{name}: {definition}" if definition else name


def colour(index: int) -> str:
    """The ``index``-th colour of the Okabe–Ito line cycle (wraps around)."""
    return LINE_COLOURS[index % len(LINE_COLOURS)]


def loss_key(loss: str | None) -> str:
    """Normalised loss identifier: ``"mse"``, ``"ce"`` or the lower-cased input."""
    if not loss:
        return "unknown"
    lowered = str(loss).strip().lower()
    return _LOSS_ALIASES.get(lowered, lowered)


def loss_display(loss: str | None) -> str:
    """Display name of a loss: ``MSE``, ``CE`` or the upper-cased identifier."""
    return loss_key(loss).upper()


def loss_colour(loss: str | None, others: Sequence[str] = ()) -> str:
    """Colour of a loss: fixed for MSE and CE, else taken from the cycle by position in ``others``.

    Parameters
    ----------
    loss : str or None
        Loss name as found in a run directory.
    others : sequence of str
        The sorted normalised names of the other losses present, which fixes their colours.
    """
    key = loss_key(loss)
    if key in LOSS_COLOURS:
        return LOSS_COLOURS[key]
    position = list(others).index(key) if key in others else len(others)
    return colour(2 + position)


#: Fixed margins in inches (left, right, bottom, top, horizontal gap, vertical gap). A fixed
#: layout is several times cheaper than matplotlib's constrained layout and fits every label used.
_MARGINS = (0.85, 0.2, 0.55, 0.4, 0.95, 0.8)
_SUPTITLE_INCHES = 0.3


def new_figure(
    ncols: int = 1,
    nrows: int = 1,
    *,
    width: float = 6.4,
    height: float = 4.0,
    suptitle: bool = False,
    legend_width: float = 0.0,
):
    """A figure on an Agg canvas with an ``nrows × ncols`` grid of axes and fixed margins.

    Parameters
    ----------
    ncols, nrows : int
        Grid of axes.
    width, height : float
        Size in inches of one cell of the grid.
    suptitle : bool
        Reserve room for a figure title above the grid.
    legend_width : float
        Inches reserved on the right for a legend placed outside the axes.

    Returns
    -------
    (Figure, numpy.ndarray of Axes)
        The axes array always has shape ``(nrows, ncols)``.
    """
    left, right, bottom, top, hgap, vgap = _MARGINS
    top += _SUPTITLE_INCHES if suptitle else 0.0
    right += legend_width
    fig_w, fig_h = width * ncols + legend_width, height * nrows + (top - _MARGINS[3])
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    axes_w = (fig_w - left - right - (ncols - 1) * hgap) / ncols
    axes_h = (fig_h - bottom - top - (nrows - 1) * vgap) / nrows
    fig.subplots_adjust(
        left=left / fig_w,
        right=1 - right / fig_w,
        bottom=bottom / fig_h,
        top=1 - top / fig_h,
        wspace=hgap / axes_w,
        hspace=vgap / axes_h,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade_label(value: float, _pos: int | None = None) -> str:
    """``10⁻²``-style label of a power of ten (plain ``%g`` otherwise), without mathtext."""
    if value <= 0:
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) < 1e-9:
        return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)
    return f"{value:g}"


def set_log_y(ax: Axes) -> None:
    """Log-scale y axis labelled ``10⁻²``-style; non-positive values are masked.

    Unicode superscripts instead of matplotlib's mathtext tick labels keep the figures readable
    and make drawing several times faster. Minor ticks are labelled only when the axis spans less
    than a decade (otherwise it might show no label at all).
    """
    ax.set_yscale("log", nonpositive="mask")
    ax.yaxis.set_major_locator(LogLocator(base=10.0, numticks=8))
    ax.yaxis.set_major_formatter(FuncFormatter(_decade_label))
    low, high = ax.get_ylim()
    if low > 0 and high / low >= 10.0:
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos=None: f"{v:.3g}"))


def save_figure(
    fig: Figure,
    out_dir: Path,
    name: str,
    *,
    title: str,
    caption: str,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 110,
) -> FigureFile:
    """Save ``fig`` as ``out_dir/name.<fmt>`` for each format, atomically.

    Parameters
    ----------
    fig : Figure
        The figure (on an Agg canvas).
    out_dir : Path
        Destination folder, created if missing.
    name : str
        File stem.
    title, caption : str
        Stored in the returned :class:`FigureFile` for the HTML report.
    formats : sequence of {"png", "svg"}
        Formats to write.
    dpi : int
        Resolution of the PNG.
    """
    paths: dict[str, Path] = {}
    for fmt in formats:
        buffer = io.BytesIO()
        # Fixed metadata keeps the SVG byte-identical between runs (no date stamp).
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        paths[fmt] = atomic_write_bytes(Path(out_dir) / f"{name}.{fmt}", buffer.getvalue())
    return FigureFile(name, title, caption, paths.get("png"), paths.get("svg"))
