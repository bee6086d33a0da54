"""Figure of collapse against depth: nc1 of each measured layer (:func:`ncmse.measure_layers`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ncmse.report.style import FigureFile, colour, new_figure, save_figure, set_log_y

__all__ = ["plot_nc1_by_depth"]


def plot_nc1_by_depth(
    results: Mapping[str, object],
    out_dir: str | Path,
    *,
    name: str = "nc1_by_depth",
    metric: str = "nc1",
    formats: Sequence[str] = ("png", "svg"),
) -> FigureFile:
    """Draw ``metric`` (default nc1, log scale) of each layer against its depth.

    Parameters
    ----------
    results : mapping layer name → NCResult (one curve), or mapping label → (mapping layer name
        → NCResult) (one curve per label, e.g. per epoch). Layers are drawn in the mapping's
        order, from input to output. NaN values (e.g. no between-class spread) are left as gaps,
        never drawn as 0.
    out_dir : folder of the files ``name.png`` / ``name.svg`` (created if missing)
    metric : an :class:`~ncmse.NCResult` attribute

    Returns
    -------
    FigureFile

    Examples
    --------
    >>> import tempfile, torch, ncmse
    >>> from ncmse.report.depth import plot_nc1_by_depth
    >>> y = torch.arange(60) % 3
    >>> H = torch.randn(60, 4, dtype=torch.float64) + 4 * torch.eye(4, dtype=torch.float64)[y]
    >>> layers = {"a": ncmse.measure_features(H, y, None, num_classes=3),
    ...           "b": ncmse.measure_features(2 * H, y, None, num_classes=3)}
    >>> plot_nc1_by_depth(layers, tempfile.mkdtemp(), formats=("svg",)).svg.exists()
    True
    """
    series = _series(results)
    names: list[str] = []
    for curve in series.values():
        names += [n for n in curve if n not in names]
    fig, axes = new_figure(
        width=max(4.0, 0.6 * len(names) + 2), legend_width=1.6 * (len(series) > 1)
    )
    ax = axes[0, 0]
    x = np.arange(len(names))
    drawn = False
    for index, (label, curve) in enumerate(series.items()):
        y = np.array([_value(curve.get(n), metric) for n in names], dtype=float)
        y[~np.isfinite(y) | (y <= 0)] = math.nan  # gaps on a log axis, never a drawn 0
        drawn |= bool(np.isfinite(y).any())
        ax.plot(x, y, marker="o", color=colour(index), label=label or None)
    if drawn:
        set_log_y(ax)
    ax.set_xticks(
        x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
    )
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel(metric)
    if len(series) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save_figure(
        fig,
        Path(out_dir),
        name,
        title=f"{metric} against depth",
        caption=(
            f"{metric} of the features of each layer (ncmse.measure_layers), input to output; "
            "gaps: undefined values (NaN)."
        ),
        formats=formats,
    )


def _series(results: Mapping[str, object]) -> dict[str, Mapping[str, object]]:
    values = list(results.values())
    if values and all(isinstance(v, Mapping) for v in values):
        return {str(label): curve for label, curve in results.items()}
    return {"": results}


def _value(result: object, metric: str) -> float:
    if result is None:
        return math.nan
    return float(getattr(result, metric))
