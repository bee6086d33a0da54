"""Sweep results carry each run's SPEC §7 verdicts and the MSE–CE accuracy gap (claim 4)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from ncmse.claims import CLAIM_IDS
from ncmse.sweep import SweepOptions, SweepSpec, expand, run_sweep
from ncmse.sweep.collect import collect, format_verdicts, sweep_accuracy_gaps


def _claims(**holds) -> list[dict]:
    return [
        {"id": cid, "statement": cid, "value": 1.0, "threshold": 1.0, "noise": 0.0,
         "holds": holds.get(cid, True), "reason": ""}
        for cid in CLAIM_IDS
    ]  # fmt: skip


def _finished(run, *, loss: str, acc: float, claims: list[dict] | None, rows=None) -> None:
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(run.config))
    summary = {"kind": "train", "status": "finished", "loss": loss, "dataset": "digits",
               "model": "mlp", "seed": run.seed, "tpt_epoch": None,
               "final": {"test_accuracy": acc, "nc1": 0.1}}  # fmt: skip
    if claims is not None:
        summary["claims"] = claims
    (run.run_dir / "summary.json").write_text(json.dumps(summary))
    if rows is not None:
        (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows() -> list[dict]:
    """An old run's metrics (no claims in its summary): nc1 falls 1000x, no TPT."""
    return [
        {"epoch": e, "train_error": 0.1 / e, "loss": 1.0 / e, "loss_nc1": 0.5 / e,
         "loss_nc23": 0.3 / e, "loss_perp": 0.2 / e, "nc1": 10.0 / e**3,
         "equinorm_means": 1 / e, "equiangular_means": 1 / e, "maxangle_means": 1 / e,
         "nc3": 1 / e, "nc4": 0.0, "snr": [2.0 * e, 1.0 * e]}
        for e in range(1, 21)
    ]  # fmt: skip


def test_results_csv_and_manifest_carry_verdicts_and_gaps(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    spec = SweepSpec(presets=("digits-mlp-mse",), seeds=(0, 1), lrs=(0.01, 0.05))
    runs = {(r.seed, r.lr): r for r in expand(spec, out)}
    _finished(runs[0, 0.01], loss="mse", acc=0.900, claims=_claims(snr_equalises=False))
    _finished(runs[0, 0.05], loss="ce", acc=0.905, claims=_claims(perp_small=None))
    _finished(runs[1, 0.01], loss="mse", acc=0.880, claims=None, rows=_rows())
    _finished(runs[1, 0.05], loss="ce", acc=0.900, claims=_claims())

    results = collect(list(runs.values()))
    old = next(r for r in results if r.run is runs[1, 0.01])
    by_id = {c["id"]: c["holds"] for c in old.claims}
    assert by_id["nc1_falls"] is True and by_id["tpt_reached"] is False  # from metrics.jsonl
    gaps = sweep_accuracy_gaps(results)
    assert [(g["seed"], round(g["value"], 6), g["holds"]) for g in gaps] == [
        ("0", -0.5, True),
        ("1", -2.0, False),
    ]
    assert "✗" in format_verdicts(results, gaps)

    assert run_sweep(spec, SweepOptions(out=out)) == 0  # all done: collect only
    rows = {r["name"]: r for r in csv.DictReader((out / "results.csv").open())}
    first = rows[runs[0, 0.01].name]
    assert first["claim_snr_equalises"] == "false" and first["claim_identity"] == "true"
    assert rows[runs[0, 0.05].name]["claim_perp_small"] == ""
    assert abs(float(first["accuracy_gap"]) + 0.5) < 1e-9
    assert first["accuracy_gap_holds"] == "true"
    assert rows[runs[1, 0.05].name]["accuracy_gap_holds"] == "false"
    manifest = json.loads((out / "sweep.json").read_text())
    assert [g["holds"] for g in manifest["accuracy_gaps"]] == [True, False]
    entry = next(e for e in manifest["runs"] if e["name"] == runs[0, 0.01].name)
    assert entry["claims"]["snr_equalises"] is False
    printed = capsys.readouterr().out
    assert "claims (SPEC §7) per run" in printed and "1=identity" in printed
