"""One UFM experiment: flows vs closed form, plain GD, measurements -> run directory.

Run directory (docs/ARCHITECTURE.md, "Run directory of ncmse ufm")::

    config.yaml    every option
    summary.json   {"kind": "ufm", "status": "finished", "time_convention", "flows": {...},
                    "gd": {...}, ...}
    omega.csv      t, flow, j, omega_sim, omega_pred   (omega_pred empty for "central")
    metrics.csv    t, step, flow, SPEC metric names, snr_1..snr_{C-1}, omega_ratio,
                   nc1_pred, invariant_drift, objective   (flow "gd" rows use t = step · lr;
                   flows are measured with the λ = 0 least-squares classifier;
                   invariant_drift = max_j |F(ω_j(t)) − F(ω_j(0)) − t| / (|F(ω_j(0))| + t))
    figures/       drawn by the report (:mod:`ncmse.report.ufm_figures`)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ncmse.collapse.api import measure_features
from ncmse.collapse.result import METRIC_NAMES
from ncmse.rundir.writer import RunWriter
from ncmse.train.runtime import environment, resolve_device
from ncmse.ufm import closed_form, flows, gd, model
from ncmse.ufm.config import UFMConfig

__all__ = ["TIME_CONVENTION", "run_ufm"]

TIME_CONVENTION = (
    "t is gradient-flow time of dH/dt = -grad_H L_LS(H) for the SPEC §3 loss "
    "L = 1/2 (1/N) sum ||W h + b - e_y||^2 (+ ridge); a loss scaled by k has time t/k. "
    "Plain GD rows use t = step * lr."
)


def _flat_metrics(result_dict: dict, num_classes: int) -> dict:
    row = {k: result_dict[k] for k in METRIC_NAMES if k in result_dict}
    snr = list(result_dict.get("snr", []))
    for j in range(num_classes - 1):
        row[f"snr_{j + 1}"] = snr[j] if j < len(snr) else math.nan
    return row


def _measure_ls(H: torch.Tensor) -> dict:
    """SPEC metrics of features ``H`` with the λ = 0 least-squares classifier."""
    W, b = model.ls_classifier(H, 0.0)
    X, labels = model.flatten(H)
    res = measure_features(X, labels, W, b, num_classes=H.shape[0], lam=0.0)
    return _flat_metrics(res.to_dict(), H.shape[0])


def _run_flow(cfg: UFMConfig, name: str, H0: torch.Tensor, omega0: np.ndarray) -> dict:
    """Simulate one flow, measure at every record, compare with its closed form."""
    t_end = cfg.central_t_end if name == "central" else cfg.t_end
    times = flows.log_times(t_end, cfg.num_records)
    measured: list[dict] = []

    def on_record(t: float, H: torch.Tensor) -> None:
        measured.append(_measure_ls(H) | {"t": t, "flow": name})

    start = time.perf_counter()
    res = flows.simulate_flow(
        H0,
        flow=name,
        times=times,
        dt=cfg.dt,
        rel_step=None if cfg.dt is not None else cfg.rel_step,
        method=cfg.method,
        on_record=on_record,
        stop_on_collapse=name == "central",
    )
    seconds = time.perf_counter() - start
    times = res.times
    law = None if name == "central" else closed_form.law_for_flow(name, cfg.n, cfg.num_classes)
    pred = law.omega(times, omega0) if law is not None else np.full_like(res.omega, np.nan)
    omega_rows = [
        {
            "t": t,
            "flow": name,
            "j": j + 1,
            "omega_sim": res.omega[i, j],
            "omega_pred": pred[i, j] if law is not None else None,
        }
        for i, t in enumerate(times)
        for j in range(res.omega.shape[1])
    ]
    info: dict = {
        "step_rule": res.step_rule,
        "num_steps": res.num_steps,
        "dt_min": res.dt_min,
        "dt_max": res.dt_max,
        "t_end": float(t_end),
        "seconds": seconds,
        "singular_vector_drift": float(np.abs(res.left_vectors - res.left_vectors[0]).max()),
    }
    if res.stopped is not None:
        info["t_reached"] = float(times[-1])
        info["stopped"] = res.stopped
    for i, row in enumerate(measured):
        row["omega_ratio"] = float(closed_form.omega_ratio(res.omega[i]))
        if law is not None:
            row["nc1_pred"] = float(closed_form.predicted_nc1(pred[i]))
            row["invariant_drift"] = _relative_drift(law, res.omega[i], omega0, times[i])
    if law is not None:
        info["law"] = asdict(law)
        info["max_rel_error_omega"] = float(np.max(np.abs(res.omega / pred - 1.0)))
        info["max_invariant_drift"] = max(r["invariant_drift"] for r in measured)
    info["final"] = {k: v for k, v in measured[-1].items() if k != "flow"}
    return {"omega_rows": omega_rows, "metric_rows": measured, "info": info}


def _relative_drift(law: closed_form.Law, omega: np.ndarray, omega0: np.ndarray, t: float) -> float:
    """``max_j |F(ω_j(t)) − F(ω_j(0)) − t| / (|F(ω_j(0))| + t)``: conservation error of the law."""
    f0 = law.invariant(omega0)
    drift = np.abs(law.invariant(omega) - f0 - t) / (np.abs(f0) + t)
    return float(np.max(drift))


def _run_gd(cfg: UFMConfig, device: torch.device) -> dict:
    state = gd.init_gd(cfg.n, cfg.num_classes, cfg.p, seed=cfg.seed, device=device)
    start = time.perf_counter()
    res = gd.run_gd(state, lam=cfg.lam, lam_h=cfg.lam_h, lr=cfg.lr, steps=cfg.steps)
    seconds = time.perf_counter() - start
    rows = []
    for r in res.records:
        row = _flat_metrics(r, cfg.num_classes)
        row.update(t=r["step"] * cfg.lr, step=r["step"], flow="gd", objective=r["objective"])
        rows.append(row)
    info = {
        "lr": res.lr,
        "lr_features": res.lr_features,
        "lam": cfg.lam,
        "lam_h": cfg.lam_h,
        "steps": cfg.steps,
        "seconds": seconds,
        "max_loss_perp_ratio_after_first_record": max(
            (r["loss_perp_ratio"] for r in rows[1:]), default=math.nan
        ),
        "final": {k: v for k, v in rows[-1].items() if k != "flow"},
    }
    return {"metric_rows": rows, "info": info}


def run_ufm(cfg: UFMConfig, run_dir: Path) -> dict:
    """Run every requested flow and plain GD, and write the run directory (not figures).

    Returns
    -------
    dict
        The summary also written to ``summary.json``.
    """
    omega0 = np.sort(np.asarray(cfg.resolved_omega0(), dtype=np.float64))[::-1].copy()
    device = resolve_device(cfg.device)
    writer = RunWriter(run_dir)
    H0 = model.make_features(cfg.n, cfg.num_classes, cfg.p, omega0, seed=cfg.seed, device=device)
    config = asdict(cfg) | {"omega0": omega0.tolist()}
    writer.write_config(config)
    omega_rows: list[dict] = []
    metric_rows: list[dict] = []
    flow_info: dict = {}
    for name in cfg.flow_names():
        out = _run_flow(cfg, name, H0, omega0)
        omega_rows += out["omega_rows"]
        metric_rows += out["metric_rows"]
        flow_info[name] = out["info"]
    gd_info = None
    if cfg.steps > 0:
        out = _run_gd(cfg, device)
        metric_rows += out["metric_rows"]
        gd_info = out["info"]
    columns = ["t", "step", "flow", *METRIC_NAMES]
    columns += [f"snr_{j + 1}" for j in range(cfg.num_classes - 1)]
    columns += ["omega_ratio", "nc1_pred", "invariant_drift", "objective"]
    writer.write_rows(
        omega_rows, name="omega", jsonl=False, columns=["t", "flow", "j", "omega_sim", "omega_pred"]
    )
    writer.write_rows(metric_rows, jsonl=False, columns=columns)
    summary = {
        "kind": "ufm",
        "status": "finished",
        "n": cfg.n,
        "num_classes": cfg.num_classes,
        "p": cfg.p,
        "omega0": omega0.tolist(),
        "seed": cfg.seed,
        "time_convention": TIME_CONVENTION,
        "flows": flow_info,
        "gd": gd_info,
        "environment": environment(device),
    }
    writer.write_summary(summary)
    return summary
