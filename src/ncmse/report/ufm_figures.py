"""Figures of a ``ncmse ufm`` run directory (read through :mod:`ncmse.rundir.reader`, drawn with
:mod:`ncmse.report.style`).

Figures (PNG and SVG each) under ``RUN_DIR/figures`` (or ``out_dir``):

* ``ufm_omega`` — ω_j(t) simulated (markers) vs closed form (lines) and the asymptote, log-log
* ``ufm_omega_ratio`` — ω_max/ω_min simulated vs predicted
* ``ufm_nc1`` — measured nc1 along each flow vs predicted Σ ω_j^{-2}
* ``ufm_nc234`` — NC2–NC4 quantities along each flow (→ 0)
* ``ufm_gd_loss`` — plain GD: L, L_NC1, L_NC2/3, L_⊥ and L_⊥/L
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ncmse.errors import InputError
from ncmse.report.style import LINE_COLOURS, FigureFile, layout_figure, legend_below, save_figure
from ncmse.rundir.format import number
from ncmse.rundir.reader import Run, load_run, read_rows

__all__ = ["plot_ufm_run"]

_FLOW_LABEL = {
    "projected": "projected (renormalised) flow",
    "variant": "step-then-renormalise",
    "central": "central-path flow",
}
_CAPTION = "Unconstrained features model run (SPEC §4–§5)."


def _colour(i: int) -> str:
    return LINE_COLOURS[i % len(LINE_COLOURS)]


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop points that a log axis cannot show (t ≤ 0, y ≤ 0, NaN)."""
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[keep], y[keep]


def _figure(ncols: int, width: float = 5.2) -> tuple[Figure, np.ndarray]:
    """``ncols`` panels side by side, with room below each for its legend."""
    fig = layout_figure(width * ncols, 5.0)
    return fig, fig.subplots(1, ncols, squeeze=False)


def _save(fig: Figure, out_dir: Path, name: str, title: str) -> FigureFile:
    for ax in fig.axes:  # a log axis with nothing positive on it cannot be drawn
        if not ax.has_data():
            ax.set(xscale="linear", yscale="linear")
            ax.text(0.5, 0.5, "no positive data", ha="center", transform=ax.transAxes)
        legend_below(ax)
    return save_figure(fig, out_dir, name, title=title, caption=_CAPTION)


def _measured_and_predicted(
    ax: Axes, index: int, t: np.ndarray, measured: np.ndarray, predicted: Any, labels: tuple
) -> None:
    """One flow's measured values (open markers) and its prediction (line, when finite) in the
    flow's colour; ``labels`` = (measured entry, predicted entry)."""
    ax.plot(*_positive(t, measured), "o", color=_colour(index), ms=3, mfc="none", label=labels[0])
    if predicted is not None and np.isfinite(predicted).any():
        ax.plot(*_positive(t, predicted), "-", color=_colour(index), label=labels[1])


def _omega_by_flow(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """flow → (times (T,), simulated ω (T, k), predicted ω (T, k)) from omega.csv (if any)."""
    if not path.is_file():
        return {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in read_rows(path):
        groups.setdefault(row["flow"], []).append(row)
    out = {}
    for name, rows in groups.items():
        times = sorted({number(r["t"]) for r in rows})
        ks = sorted({int(r["j"]) for r in rows})
        index = {t: i for i, t in enumerate(times)}
        sim = np.full((len(times), len(ks)), np.nan)
        pred = np.full_like(sim, np.nan)
        for r in rows:
            i, j = index[number(r["t"])], int(r["j"]) - 1
            sim[i, j], pred[i, j] = number(r["omega_sim"]), number(r["omega_pred"])
        out[name] = (np.asarray(times), sim, pred)
    return out


def _metrics_by_flow(run: Run) -> dict[str, dict[str, np.ndarray]]:
    flows = np.asarray(run.text_columns.get("flow", ["run"] * run.num_rows))
    return {
        str(name): {k: v[flows == name] for k, v in run.columns.items()}
        for name in dict.fromkeys(flows.tolist())
    }


def _plot_omega(omega: dict, summary: dict, out_dir: Path) -> FigureFile:
    fig, axes = _figure(len(omega))
    for ax, (name, (t, sim, pred)) in zip(axes[0], omega.items()):
        for j in range(sim.shape[1]):
            ax.plot(*_positive(t, pred[:, j]), "-", color=_colour(j), lw=1.2)
            ax.plot(*_positive(t, sim[:, j]), "o", color=_colour(j), ms=3, mfc="none")
        law = (summary.get("flows") or {}).get(name, {}).get("law")
        if law:
            tt = t[t > 0]
            asym = (tt / law["c3"]) ** 0.25 if law["c3"] > 0 else np.sqrt(tt / law["c2"])
            ax.plot(tt, asym, "k--", lw=1.0, label="asymptote")
            ax.plot([], [], "k-", label="closed form")
        ax.plot([], [], "ko", mfc="none", ms=3, label="simulated")
        ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="ω_j(t)")
        ax.set_title(_FLOW_LABEL.get(name, name))
    return _save(fig, out_dir, "ufm_omega", "SNR singular values ω_j(t): simulation vs closed form")


def _plot_ratio(omega: dict, out_dir: Path) -> FigureFile:
    fig, axes = _figure(1, width=5.5)
    ax: Axes = axes[0, 0]
    for idx, (name, (t, sim, pred)) in enumerate(omega.items()):
        label = _FLOW_LABEL.get(name, name)
        _measured_and_predicted(ax, idx, t, sim.max(1) / sim.min(1), pred.max(1) / pred.min(1),
                                (f"{label} (simulated)", f"{label} (closed form)"))  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="ω_max / ω_min")
    ax.set_title("Equalisation of the SNR singular values")
    return _save(fig, out_dir, "ufm_omega_ratio", "Equalisation of the SNR singular values")


def _plot_nc1(metrics: dict, out_dir: Path) -> FigureFile:
    fig, axes = _figure(1, width=5.5)
    ax: Axes = axes[0, 0]
    for idx, (name, cols) in enumerate(metrics.items()):
        if name == "gd":
            continue
        label = _FLOW_LABEL.get(name, name)
        labels = (f"{label}: measured nc1", f"{label}: Σ ω_j⁻² predicted")
        _measured_and_predicted(ax, idx, cols["t"], cols["nc1"], cols.get("nc1_pred"), labels)
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="nc1 = Tr(Σ_W Σ_B^†)/C")
    ax.set_title("NC1 along the flows")
    return _save(fig, out_dir, "ufm_nc1", "NC1 along the flows: measured vs predicted")


def _plot_nc234(metrics: dict, out_dir: Path) -> FigureFile:
    names = [n for n in metrics if n != "gd"]
    keys = ("equinorm_means", "equiangular_means", "maxangle_means", "nc3", "nc4")
    fig, axes = _figure(len(names))
    for ax, name in zip(axes[0], names):
        cols = metrics[name]
        for idx, key in enumerate(keys):
            if key in cols:
                x, y = _positive(cols["t"], cols[key])
                if x.size:
                    ax.plot(x, y, "-o", ms=2.5, color=_colour(idx), label=key)
        ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="value (→ 0)")
        ax.set_title(_FLOW_LABEL.get(name, name) + " (LS classifier)")
    return _save(fig, out_dir, "ufm_nc234", "NC2–NC4 along the flows")


def _plot_gd(cols: dict[str, np.ndarray], out_dir: Path) -> FigureFile:
    step = cols["step"]
    fig, axes = _figure(2)
    ax1, ax2 = axes[0]
    names = {"loss": "L", "loss_nc1": "L_NC1", "loss_nc23": "L_NC2/3", "loss_perp": "L_⊥"}
    for idx, (key, label) in enumerate(names.items()):
        ax1.plot(*_positive(step, cols[key]), "-", color=_colour(idx), label=label)
    ax1.set(xscale="log", yscale="log", xlabel="GD step", ylabel="loss (SPEC §3)")
    ax1.set_title("Plain UFM GD: loss decomposition")
    ax2.plot(
        *_positive(step, cols["loss_perp_ratio"]), "-o", ms=3, color=_colour(1), label="L_⊥ / L"
    )
    ax2.plot(*_positive(step, cols["nc1"]), "-s", ms=3, color=_colour(0), label="nc1")
    ax2.set(xscale="log", yscale="log", xlabel="GD step", ylabel="value")
    ax2.set_title("Distance from the central path")
    return _save(fig, out_dir, "ufm_gd_loss", "Plain GD on the UFM: loss decomposition")


def plot_ufm_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[FigureFile]:
    """Draw every figure of a ``ncmse ufm`` run directory.

    Parameters
    ----------
    run_dir : path
        Directory with ``omega.csv``, ``metrics.csv`` and ``summary.json``.
    out_dir : path, optional
        Where to write; default ``run_dir / "figures"``.

    Returns
    -------
    list of FigureFile
        One per figure (PNG and SVG).

    Raises
    ------
    InputError
        If ``run_dir`` is not the directory of a ``ncmse ufm`` run.
    """
    run = load_run(run_dir)
    if not (run.path / "summary.json").is_file():
        raise InputError(
            f"{run.path / 'summary.json'} is missing: is {run.path} a `ncmse ufm` run directory?"
        )
    if run.kind != "ufm":
        raise InputError(f"{run.path} is a {run.kind!r} run, not a 'ufm' run")
    out = Path(out_dir) if out_dir is not None else run.path / "figures"
    omega = _omega_by_flow(run.path / "omega.csv")
    metrics = _metrics_by_flow(run)
    figures: list[FigureFile] = []
    if omega:
        figures += [_plot_omega(omega, run.summary, out), _plot_ratio(omega, out)]
    if any(name != "gd" for name in metrics):
        figures += [_plot_nc1(metrics, out), _plot_nc234(metrics, out)]
    if "gd" in metrics:
        figures.append(_plot_gd(metrics["gd"], out))
    return figures
