"""Colours, labels and file output shared by every report figure.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with an explicit Agg canvas, never
through ``pyplot``: no display is needed and the global backend of the caller is left alone.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Bbox, ScaledTranslation

from ncmse.rundir.atomic import atomic_write_bytes

__all__ = [
    "OKABE_ITO",
    "LINE_COLOURS",
    "LOSS_COLOURS",
    "TPT_COLOUR",
    "METRIC_LABELS",
    "FigureFile",
    "clipped_texts",
    "colour",
    "draw_log_series",
    "figure_legend_below",
    "layout_figure",
    "legend_below",
    "legend_columns",
    "legend_wrap",
    "legends_over_data",
    "log_floor",
    "mark_floor",
    "loss_colour",
    "loss_display",
    "loss_key",
    "metric_label",
    "new_figure",
    "plot_series",
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
    "error": "error (fraction misclassified, 1 − accuracy)",
    "snr_min": "smallest SNR singular value ω_min",
    "snr_ratio": "ω_max / ω_min, the spread of the SNR singular values",
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
    pdf : Path or None
        The PDF file, if one was written.
    clipped : tuple of str
        Texts of the figure that reach outside the saved image (:func:`clipped_texts`); empty
        for a publishable figure.
    legends_over_data : tuple of str
        Legends drawn over an axes or its labels (:func:`legends_over_data`); empty for a
        publishable figure.
    """

    name: str
    title: str
    caption: str
    png: Path | None
    svg: Path | None
    pdf: Path | None = None
    clipped: tuple[str, ...] = ()
    legends_over_data: tuple[str, ...] = ()


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


def layout_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width × height`` inches on an Agg canvas with constrained layout,
    which makes room for titles, labels and legends outside the axes so none is clipped."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def clipped_texts(fig: Figure) -> list[str]:
    """Visible non-empty texts of ``fig`` whose drawn extent leaves the figure.

    Draws the figure, then compares each :class:`matplotlib.text.Text`'s window extent with the
    figure's bounding box (1 pixel of tolerance). Legend texts are included.

    Returns
    -------
    list of str
        The texts that are (partly) outside the saved image: clipped titles and labels.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    undrawn = _undrawn_tick_labels(fig)
    out = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        extent = text.get_window_extent(renderer)
        if (
            extent.x0 < box.x0 - 1
            or extent.y0 < box.y0 - 1
            or extent.x1 > box.x1 + 1
            or extent.y1 > box.y1 + 1
        ):
            out.append(text.get_text())
    return out


#: Inches between the bottom of an axes and the top of :func:`legend_below`'s legend: room for
#: the tick labels and one line of x label at the default font sizes.
_LEGEND_DROP = 0.5
#: Inches per character of the legend's small font (DejaVu Sans at 8.3 pt, rounded up) and per
#: column for its handle and spacing, to choose how many columns fit a width.
_LEGEND_CHAR, _LEGEND_HANDLE = 0.07, 0.45


def legend_columns(labels: Sequence[str], width: float, *, most: int = 4) -> int:
    """The most legend columns (at most ``most``) whose entries fit ``width`` inches, the labels
    split into columns in order as matplotlib does (the first columns take the extra rows); a
    label of several lines is as wide as its longest line."""
    lengths = np.array([max(len(line) for line in label.splitlines() or [""]) for label in labels])
    fitting = [
        n
        for n in range(1, min(most, lengths.size) + 1)
        if sum(_LEGEND_CHAR * c.max() + _LEGEND_HANDLE for c in np.array_split(lengths, n)) <= width
    ]
    return max(fitting, default=1)


def legend_wrap(label: str, width: float) -> str:
    """``label`` wrapped to lines that fit a legend ``width`` inches wide (handle included)."""
    return textwrap.fill(label, max(10, int((width - _LEGEND_HANDLE) // _LEGEND_CHAR)))


def _panel_width(ax: Axes) -> float:
    """Inches of the figure's width that the grid cell(s) of ``ax`` take, less a margin."""
    fig = ax.get_figure()
    spec = ax.get_subplotspec()
    if spec is None:
        return ax.get_position().width * fig.get_figwidth()
    return 0.95 * fig.get_figwidth() * len(spec.colspan) / spec.get_gridspec().ncols


def legend_below(ax: Axes, ncol: int | None = None) -> Legend | None:
    """The legend of ``ax`` under its tick labels and x label, off the data.

    Parameters
    ----------
    ax : Axes
        Axes whose labelled artists make the entries; nothing is drawn when none is labelled.
    ncol : int, optional
        Columns; by default as many as fit the axes' width.

    Returns
    -------
    Legend or None
        The legend. Place it in a figure with constrained layout (:func:`layout_figure`), which
        makes room for it below the axes.
    """
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    fig = ax.get_figure()
    if ncol is None:
        ncol = legend_columns(labels, _panel_width(ax))
    below = ax.transAxes + ScaledTranslation(0.0, -_LEGEND_DROP, fig.dpi_scale_trans)
    return ax.legend(handles, labels, fontsize="small", loc="upper center",
                     bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol,
                     handlelength=1.6, columnspacing=1.0, frameon=False)  # fmt: skip


def figure_legend_below(fig: Figure) -> Legend | None:
    """One legend under all axes of ``fig`` (a :func:`layout_figure`): each label of any axes
    once, in the order first met."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if not entries:
        return None
    labels = list(entries)
    return fig.legend(list(entries.values()), labels, loc="outside lower center",
                      ncol=legend_columns(labels, 0.95 * fig.get_figwidth()), fontsize="small",
                      handlelength=1.6, columnspacing=1.2, frameon=False)  # fmt: skip


def _overlap(a: Bbox, b: Bbox) -> bool:
    """Whether two window extents share more than a pixel in both directions."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1


def legends_over_data(fig: Figure, *, draw: bool = True) -> list[str]:
    """Legends of ``fig`` drawn over the data area of an axes, over its title, axis labels or
    tick labels, or over another legend.

    Compares each visible legend's window extent with each visible axes' window extent, with
    those of its texts and with the other legends' (1 pixel of tolerance); draws the figure
    first unless ``draw`` is false (it was just drawn, as by :func:`clipped_texts`).

    Returns
    -------
    list of str
        ``"legend 'first entry' over <what> of axes 'title'"`` for each overlap found.
    """
    if draw:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    undrawn = _undrawn_tick_labels(fig)
    out = []
    legends = [lg for lg in legends if lg is not None and lg.get_visible()]
    boxes = [lg.get_window_extent(renderer) for lg in legends]
    for index, (legend, box) in enumerate(zip(legends, boxes)):
        first = legend.get_texts()[0].get_text() if legend.get_texts() else ""
        if any(_overlap(box, other) for other in boxes[index + 1 :]):
            out.append(f"legend {first!r} over another legend")
        for ax in fig.axes:
            if not ax.get_visible() or not ax.axison:
                continue
            texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
            texts += [t for t in (*ax.get_xticklabels(), *ax.get_yticklabels())
                      if id(t) not in undrawn]  # fmt: skip
            covered = [("the data", ax.get_window_extent(renderer))] + [
                (repr(t.get_text()), t.get_window_extent(renderer))
                for t in texts
                if t.get_visible() and t.get_text().strip()
            ]
            for what, extent in covered:
                if _overlap(box, extent):
                    out.append(f"legend {first!r} over {what} of axes {ax.get_title()!r}")
    return out


def _undrawn_tick_labels(fig: Figure) -> set[int]:
    """Ids of tick labels that exist but are not drawn (their tick lies outside the view, or
    the axes are switched off)."""
    undrawn: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            drawn = {id(t) for t in axis._update_ticks()} if ax.axison else set()
            for tick in (*axis.majorTicks, *axis.minorTicks):
                if id(tick) not in drawn:
                    undrawn.update((id(tick.label1), id(tick.label2)))
    return undrawn


def log_floor(arrays: Sequence[np.ndarray]) -> float | None:
    """Where exact zeros are drawn on a log axis: the decade below the smallest positive value.

    Returns
    -------
    float or None
        ``10**(floor(log10(min positive)) − 1)`` when some finite value is ≤ 0 and some is
        positive; None when nothing needs a floor.
    """
    values = [np.asarray(a, dtype=float) for a in arrays if a is not None]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.empty(0)
    positive = finite[finite > 0]
    if not positive.size or not (finite <= 0).any():
        return None
    return float(10.0 ** (np.floor(np.log10(positive.min())) - 1))


def draw_log_series(ax: Axes, x: np.ndarray, y: np.ndarray, floor: float | None, **kwargs) -> bool:
    """Plot ``y(x)`` for a log axis: values ≤ 0 drawn at ``floor`` as open markers.

    Without a floor, non-positive values are left out. Returns whether anything was drawn.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mask = np.isfinite(x) & np.isfinite(y)
    if not mask.any():
        return False
    x, y = x[mask], y[mask]
    zero = y <= 0
    shown = np.where(zero, floor if floor is not None else np.nan, y)
    if not np.isfinite(shown).any():
        return False
    ax.plot(x, shown, **kwargs)
    if floor is not None and zero.any():
        ax.plot(x[zero], shown[zero], "o", mfc="white", mec=kwargs.get("color"), ms=4, lw=0)
    return True


def plot_series(
    ax: Axes, x: np.ndarray, series: Sequence[tuple[np.ndarray, dict[str, Any]]], *, log: bool
) -> tuple[bool, float | None]:
    """Draw each ``(y, plot keyword arguments)`` of ``series`` against ``x``.

    On a log axis (asked for, and some value positive) values ≤ 0 are drawn at a marked floor
    (:func:`log_floor`, :func:`draw_log_series`, :func:`mark_floor`); otherwise on a linear
    axis. Non-finite points are left out.

    Returns
    -------
    (bool, float or None)
        Whether anything was drawn, and the floor used (None when no zero needed one).
    """
    x = np.asarray(x, dtype=float)
    ys = [np.asarray(y, dtype=float) for y, _ in series]
    log = log and any(bool((y[np.isfinite(y)] > 0).any()) for y in ys)
    floor = log_floor(ys) if log else None
    drawn = False
    for y, (_, kwargs) in zip(ys, series):
        if log:
            drawn |= draw_log_series(ax, x, y, floor, **kwargs)
            continue
        mask = np.isfinite(x) & np.isfinite(y)
        if mask.any():
            ax.plot(x[mask], y[mask], **kwargs)
            drawn = True
    if log and drawn:
        set_log_y(ax)
        mark_floor(ax, floor)
    return drawn, floor


def mark_floor(ax: Axes, floor: float | None) -> None:
    """A dotted line at ``floor`` with the note that measurements equal to 0 are drawn there."""
    if floor is None:
        return
    ax.axhline(floor, color=TPT_COLOUR, ls=(0, (1, 2)), lw=0.9)
    ax.annotate(
        f"0 drawn at {_decade_label(floor)}",
        (1.0, floor),
        xycoords=("axes fraction", "data"),
        xytext=(-3, 3),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize="x-small",
        color=TPT_COLOUR,
    )


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
    formats : sequence of {"png", "svg", "pdf"}
        Formats to write.
    dpi : int
        Resolution of the PNG.
    """
    clipped = tuple(clipped_texts(fig))
    covering = tuple(legends_over_data(fig, draw=False))  # laid out by that draw
    # the layout computed by that draw is kept: constrained layout is not re-run per format
    fig.set_layout_engine("none")
    paths: dict[str, Path] = {}
    for fmt in formats:
        buffer = io.BytesIO()
        # Fixed metadata keeps the SVG byte-identical between runs (no date stamp).
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        paths[fmt] = atomic_write_bytes(Path(out_dir) / f"{name}.{fmt}", buffer.getvalue())
    return FigureFile(
        name,
        title,
        caption,
        paths.get("png"),
        paths.get("svg"),
        paths.get("pdf"),
        clipped,
        covering,
    )
