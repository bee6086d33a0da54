"""Claims and central-path fit in reports: run page, comparison page, CSVs (SPEC §7, §9)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ncmse.claims import CLAIM_IDS
from ncmse.report import load_run, write_comparison_report, write_run_report
from ncmse.report.verdicts import (
    accuracy_gap_section,
    central_path_section,
    claims_section,
    run_gap_records,
    verdicts_csv,
    verdicts_section,
)
from ncmse.ufm.closed_form import projected_law
from ncmse.verdicts import SOURCE_COMPUTED, SOURCE_SUMMARY, run_central_path, run_claims

C, N_PER_CLASS = 4, 50
EPOCHS = [1, 2, 3, 5, 8, 12, 18, 27, 40]
TPT = 8
KAPPA = 3.0e3


def _omega(epochs: np.ndarray) -> np.ndarray:
    """ω before TPT rising linearly; from TPT on the projected law with κ = KAPPA."""
    law = projected_law(N_PER_CLASS, C)
    start = np.array([4.0, 2.0, 1.0])
    after = law.omega(KAPPA * np.maximum(epochs - TPT, 0.0), start)
    before = start[None, :] * (0.4 + 0.6 * epochs[:, None] / TPT)
    return np.where((epochs >= TPT)[:, None], after, before)


def write_run(path: Path, *, loss: str, seed: int, accuracy: float, tpt: bool = True,
              summary_extra: dict | None = None) -> Path:  # fmt: skip
    """A ``ncmse train``-like run directory (metrics.csv, summary.json, config.yaml)."""
    path.mkdir(parents=True)
    ep = np.array(EPOCHS, dtype=float)
    omega = _omega(ep)
    rows = []
    for i, e in enumerate(ep):
        loss_value = 0.5 * 0.7**i
        perp = (0.3 * 0.6**i) * loss_value
        nc1_part = 0.5 * (loss_value - perp)
        err = 0.0 if (tpt and e >= TPT) else max(0.01, 0.3 - 0.05 * i)
        row = {
            "epoch": int(e),
            "train_error": err,
            "accuracy": 1 - err,
            "loss": loss_value,
            "loss_nc1": nc1_part,
            "loss_nc23": loss_value - perp - nc1_part,
            "loss_perp": perp,
            "loss_perp_ratio": perp / loss_value,
            "nc1": float(np.sum(omega[i] ** -2.0)),
            "equinorm_means": 0.3 / (i + 1),
            "equiangular_means": 0.3 / (i + 1),
            "maxangle_means": 0.3 / (i + 1),
            "nc3": 0.1 * (i + 1),  # rises: nc2_nc3_nc4_fall fails
            "nc4": 0.0,
            **{f"snr_{j + 1}": float(w) for j, w in enumerate(omega[i])},
            "num_samples": N_PER_CLASS * C,
            "num_classes": C,
            "balanced": True,
            "test_accuracy": accuracy,
        }
        rows.append(row)
    with (path / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()}
                         for r in rows)  # fmt: skip
    tpt_epoch = next((r["epoch"] for r in rows if r["train_error"] == 0), None)
    summary = {"kind": "train", "status": "finished", "tpt_epoch": tpt_epoch, "loss": loss,
               "dataset": "toy", "model": "mlp", "seed": seed}  # fmt: skip
    summary.update(summary_extra or {})
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_old_run_gets_claims_and_fit_computed_from_its_files(tmp_path):
    run = load_run(write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9))
    claims, source = run_claims(run)
    assert source == SOURCE_COMPUTED
    by_id = {c["id"]: c for c in claims}
    assert [c["id"] for c in claims] == list(CLAIM_IDS)
    assert by_id["tpt_reached"]["value"] == TPT
    first, last = (np.array(_omega(np.array([e], dtype=float))[0]) for e in (EPOCHS[0], EPOCHS[-1]))
    assert by_id["nc1_falls"]["value"] == pytest.approx(np.sum(first**-2) / np.sum(last**-2))
    assert (
        by_id["nc2_nc3_nc4_fall"]["holds"] is False and "nc3" in by_id["nc2_nc3_nc4_fall"]["reason"]
    )
    assert by_id["snr_equalises"]["holds"] is True
    fits, source = run_central_path(run)
    assert source == SOURCE_COMPUTED
    projected = fits[0]
    assert (projected["law"], projected["n"], projected["C"], projected["e0"]) == (
        "projected", N_PER_CLASS, C, TPT)  # fmt: skip
    # csv holds repr(float): the fit of the file recovers the generating κ
    assert projected["kappa"] == pytest.approx(KAPPA, rel=1e-6)
    assert fits[1]["rms_log_residual"] > 1e-3  # the other law does not fit exactly


def test_recorded_verdicts_win_over_recomputation(tmp_path):
    recorded = [{"id": cid, "statement": "s", "value": 1.0, "threshold": 1e-10, "noise": None,
                 "holds": False, "reason": "recorded"} for cid in CLAIM_IDS]  # fmt: skip
    fit = [{"law": "projected", "n": 1, "C": 2, "e0": 3, "kappa": 42.0,
            "rms_log_residual": 0.5, "points": 7, "reason": None}]  # fmt: skip
    run = load_run(
        write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9,
                  summary_extra={"claims": recorded, "central_path_fit": fit})
    )  # fmt: skip
    assert run_claims(run) == (recorded, SOURCE_SUMMARY)
    assert run_central_path(run) == (fit, SOURCE_SUMMARY)


def test_run_report_opens_with_the_claims_table(tmp_path):
    run_dir = write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9)
    text = write_run_report(run_dir).read_text()
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", text)
    assert headings[0] == "Claims"
    assert "Central path" in headings
    claims_html = text[text.index('id="claims"') : text.index("<h2>Run</h2>")]
    for cid in CLAIM_IDS:
        assert f"<code>{cid}</code>" in claims_html
    # each link points at a figure that is on the page
    targets = re.findall(r'href="#fig-([a-z_0-9]+)"', claims_html)
    assert {"nc1", "loss_decomposition", "snr", "central_path"} <= set(targets)
    for target in targets:
        assert f'id="fig-{target}"' in text
    assert "✗ fails" in claims_html and "✓ holds" in claims_html
    assert SOURCE_COMPUTED in claims_html
    assert (run_dir / "figures" / "central_path.png").is_file()
    path_html = text[text.index('id="central-path"') : text.index("<h2>Figures</h2>")]
    assert 'id="fig-central_path"' in path_html
    assert "3000" in path_html  # κ of the projected law


def test_run_without_tpt_says_why_there_is_no_fit(tmp_path):
    run = load_run(write_run(tmp_path / "r", loss="ce", seed=0, accuracy=0.9, tpt=False))
    fits, source = run_central_path(run)
    section = central_path_section(fits, source)
    assert section.count("no TPT: training error never reached zero") == 2
    claims, source = run_claims(run)
    section = claims_section(claims, source, ())
    assert "not a square-loss run" in section and "failing: <code>tpt_reached</code>" in section


def test_accuracy_gap_pairs_finished_runs_only(tmp_path):
    """A diverged run's last test accuracy is not the method's: no gap, as in the sweep table."""
    dirs = [
        write_run(tmp_path / "mse0", loss="mse", seed=0, accuracy=0.10,
                  summary_extra={"status": "diverged"}),
        write_run(tmp_path / "ce0", loss="ce", seed=0, accuracy=0.905),
    ]  # fmt: skip
    gaps = run_gap_records([load_run(d) for d in dirs])
    assert all(g["holds"] is None and g["value"] is None for g in gaps)
    assert not any(g.get("mse_run") == "mse0" for g in gaps)


def test_comparison_tabulates_verdicts_and_pairs_mse_with_ce(tmp_path):
    dirs = [
        write_run(tmp_path / "mse0", loss="mse", seed=0, accuracy=0.900),
        write_run(tmp_path / "ce0", loss="ce", seed=0, accuracy=0.905),
        write_run(tmp_path / "mse1", loss="mse", seed=1, accuracy=0.880),
        write_run(tmp_path / "ce1", loss="ce", seed=1, accuracy=0.900, tpt=False),
    ]
    runs = [load_run(d) for d in dirs]
    gaps = run_gap_records(runs)
    assert [(g["seed"], round(g["value"], 6), g["holds"]) for g in gaps] == [
        ("0", -0.5, True),
        ("1", -2.0, False),
    ]
    assert gaps[0]["mse_run"] == "mse0" and gaps[0]["ce_run"] == "ce0"
    rows = list(csv.DictReader(verdicts_csv(runs).splitlines()))
    assert [r["run"] for r in rows] == ["mse0", "ce0", "mse1", "ce1"]
    assert rows[1]["claim_perp_small"] == "" and rows[0]["claim_perp_small"] == "true"
    assert rows[3]["claim_tpt_reached"] == "false"
    table = verdicts_section(runs, tmp_path)
    assert table.count("<tr>") == 1 + len(runs)
    assert "1 of 2" in accuracy_gap_section(gaps)

    out = tmp_path / "cmp"
    text = write_comparison_report(dirs, out).read_text()
    assert "Claims per run" in text and "MSE − CE test accuracy (claim 4)" in text
    gap_rows = list(csv.DictReader((out / "accuracy_gaps.csv").read_text().splitlines()))
    assert [r["holds"] for r in gap_rows] == ["true", "false"]
    assert float(gap_rows[1]["accuracy_gap_pp"]) == pytest.approx(-2.0)
    assert (out / "claims.csv").read_text() == verdicts_csv(runs)
