"""Figures of a UFM run directory; reads only its CSV/JSON files (matplotlib, Agg backend).

Figures (PNG and SVG each) under ``RUN_DIR/figures`` (or ``out_dir``):

* ``ufm_omega`` — ω_j(t) simulated (markers) vs closed form (lines) and the asymptote, log-log
* ``ufm_omega_ratio`` — ω_max/ω_min simulated vs predicted
* ``ufm_nc1`` — measured nc1 along each flow vs predicted Σ ω_j^{-2}
* ``ufm_nc234`` — NC2–NC4 quantities along each flow (→ 0)
* ``ufm_gd_loss`` — plain GD: L, L_NC1, L_NC2/3, L_⊥ and L_⊥/L
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ncmse.errors import InputError  # noqa: E402

__all__ = ["plot_ufm_run", "PALETTE"]

#: Okabe–Ito colour-blind-safe palette
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
_FLOW_LABEL = {
    "projected": "projected (renormalised) flow",
    "variant": "step-then-renormalise",
    "central": "central-path flow",
}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path} is missing: is this the run directory of `ncmse ufm`?")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(text: str | None) -> float:
    if text is None or text == "":
        return math.nan
    if text in ("True", "False"):
        return float(text == "True")
    try:
        return float(text)
    except ValueError:
        return math.nan


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop points that a log axis cannot show (t ≤ 0, y ≤ 0, NaN)."""
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[keep], y[keep]


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    for ax in fig.axes:  # a log axis with nothing positive on it cannot be drawn
        if not ax.has_data():
            ax.set(xscale="linear", yscale="linear")
            ax.text(0.5, 0.5, "no positive data", ha="center", transform=ax.transAxes)
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        tmp = out_dir / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def _by_flow(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[row["flow"]].append(row)
    return dict(groups)


def _omega_arrays(rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times (T,), sim (T, k), pred (T, k)) of one flow from omega.csv rows."""
    times = sorted({_num(r["t"]) for r in rows})
    ks = sorted({int(r["j"]) for r in rows})
    t_index = {t: i for i, t in enumerate(times)}
    sim = np.full((len(times), len(ks)), np.nan)
    pred = np.full_like(sim, np.nan)
    for r in rows:
        i, j = t_index[_num(r["t"])], int(r["j"]) - 1
        sim[i, j], pred[i, j] = _num(r["omega_sim"]), _num(r["omega_pred"])
    return np.asarray(times), sim, pred


def _plot_omega(omega: dict, summary: dict, out_dir: Path) -> list[Path]:
    names = list(omega)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        t, sim, pred = _omega_arrays(omega[name])
        for j in range(sim.shape[1]):
            colour = PALETTE[j % len(PALETTE)]
            ax.plot(*_positive(t, pred[:, j]), "-", color=colour, lw=1.2)
            ax.plot(*_positive(t, sim[:, j]), "o", color=colour, ms=3, mfc="none")
        law = summary.get("flows", {}).get(name, {}).get("law")
        if law:
            tt = t[t > 0]
            asym = (tt / law["c3"]) ** 0.25 if law["c3"] > 0 else np.sqrt(tt / law["c2"])
            ax.plot(tt, asym, "k--", lw=1.0, label="asymptote")
            ax.plot([], [], "k-", label="closed form")
        ax.plot([], [], "ko", mfc="none", ms=3, label="simulated")
        ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="ω_j(t)")
        ax.set_title(_FLOW_LABEL.get(name, name))
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, out_dir, "ufm_omega")


def _plot_ratio(omega: dict, out_dir: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for idx, (name, rows) in enumerate(omega.items()):
        t, sim, pred = _omega_arrays(rows)
        colour = PALETTE[idx % len(PALETTE)]
        label = _FLOW_LABEL.get(name, name)
        ax.plot(*_positive(t, sim.max(1) / sim.min(1)), "o", color=colour, ms=3, mfc="none",
                label=f"{label} (simulated)")  # fmt: skip
        if np.isfinite(pred).any():
            ax.plot(*_positive(t, pred.max(1) / pred.min(1)), "-", color=colour,
                    label=f"{label} (closed form)")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="ω_max / ω_min")
    ax.set_title("Equalisation of the SNR singular values")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "ufm_omega_ratio")


def _column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.asarray([_num(r.get(name)) for r in rows])


def _plot_nc1(metrics: dict, out_dir: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for idx, (name, rows) in enumerate(metrics.items()):
        if name == "gd":
            continue
        t = _column(rows, "t")
        colour = PALETTE[idx % len(PALETTE)]
        label = _FLOW_LABEL.get(name, name)
        ax.plot(*_positive(t, _column(rows, "nc1")), "o", color=colour, ms=3, mfc="none",
                label=f"{label}: measured nc1")  # fmt: skip
        pred = _column(rows, "nc1_pred")
        if np.isfinite(pred).any():
            ax.plot(*_positive(t, pred), "-", color=colour, label=f"{label}: Σ ω_j⁻² predicted")
    ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="nc1 = Tr(Σ_W Σ_B^†)/C")
    ax.set_title("NC1 along the flows")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "ufm_nc1")


def _plot_nc234(metrics: dict, out_dir: Path) -> list[Path]:
    names = [n for n in metrics if n != "gd"]
    keys = ("equinorm_means", "equiangular_means", "maxangle_means", "nc3", "nc4")
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = metrics[name]
        t = _column(rows, "t")
        for idx, key in enumerate(keys):
            x, y = _positive(t, _column(rows, key))
            if x.size:
                ax.plot(x, y, "-o", ms=2.5, color=PALETTE[idx], label=key)
        ax.set(xscale="log", yscale="log", xlabel="flow time t", ylabel="value (→ 0)")
        ax.set_title(_FLOW_LABEL.get(name, name) + " (LS classifier)")
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "ufm_nc234")


def _plot_gd(rows: list[dict[str, str]], out_dir: Path) -> list[Path]:
    step = _column(rows, "step")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    names = {
        "loss": "L",
        "loss_nc1": "L_NC1",
        "loss_nc23": "L_NC2/3",
        "loss_perp": "L_⊥",
    }
    for idx, (key, label) in enumerate(names.items()):
        ax1.plot(*_positive(step, _column(rows, key)), "-", color=PALETTE[idx], label=label)
    ax1.set(xscale="log", yscale="log", xlabel="GD step", ylabel="loss (SPEC §3)")
    ax1.set_title("Plain UFM GD: loss decomposition")
    ax1.legend(fontsize=8)
    ax2.plot(*_positive(step, _column(rows, "loss_perp_ratio")), "-o", ms=3, color=PALETTE[3],
             label="L_⊥ / L")  # fmt: skip
    ax2.plot(*_positive(step, _column(rows, "nc1")), "-s", ms=3, color=PALETTE[0], label="nc1")
    ax2.set(xscale="log", yscale="log", xlabel="GD step", ylabel="value")
    ax2.set_title("Distance from the central path")
    ax2.legend(fontsize=8)
    return _save(fig, out_dir, "ufm_gd_loss")


def plot_ufm_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Draw every figure of a ``ncmse ufm`` run directory.

    Parameters
    ----------
    run_dir : Path
        Directory with ``omega.csv``, ``metrics.csv`` and ``summary.json``.
    out_dir : Path, optional
        Where to write; default ``run_dir / "figures"``.

    Returns
    -------
    list of Path
        The PNG and SVG files written.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "figures"
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{summary_path} is missing: is {run_dir} a `ncmse ufm` run directory?")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary.get("kind") != "ufm":
        raise InputError(f"{run_dir} is a {summary.get('kind')!r} run, not a 'ufm' run")
    omega = _by_flow(_read_csv(run_dir / "omega.csv"))
    metrics = _by_flow(_read_csv(run_dir / "metrics.csv"))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if omega:
        paths += _plot_omega(omega, summary, out_dir)
        paths += _plot_ratio(omega, out_dir)
    if any(name != "gd" for name in metrics):
        paths += _plot_nc1(metrics, out_dir)
        paths += _plot_nc234(metrics, out_dir)
    if "gd" in metrics:
        paths += _plot_gd(metrics["gd"], out_dir)
    return paths
