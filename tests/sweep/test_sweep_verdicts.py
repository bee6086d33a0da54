"""Sweep results carry each run's SPEC §7 verdicts in words, "holds in k of n" over seeds, and
claim 4 (MSE − CE test accuracy) over honestly paired seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ncmse.sweep import SweepOptions, SweepSpec, expand, run_sweep
from ncmse.sweep.collect import collect, format_verdicts, sweep_pairing, sweep_seed_groups
from ncmse.verdicts.claims import CLAIM_IDS

_REASONS = {"holds": "", "fails": "misses the threshold by more than 3 noise",
            "inconclusive": "within noise of the threshold",
            "not applicable": "not applicable: not a square-loss run"}  # fmt: skip


def _claims(**outcomes: str) -> list[dict]:
    """Claim records in the current schema: every id holds unless ``outcomes`` says otherwise."""
    return [
        {"id": cid, "statement": cid, "value": 12.0, "threshold": 10.0, "noise": 0.05,
         "holds": {"holds": True, "fails": False}.get(outcomes.get(cid, "holds")),
         "reason": _REASONS[outcomes.get(cid, "holds")]}
        for cid in CLAIM_IDS
    ]  # fmt: skip


def _finished(run, *, acc: float, claims: list[dict] | None, rows=None) -> None:
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(run.config))
    summary = {"kind": "train", "status": "finished", "loss": run.config["loss"],
               "dataset": "digits", "model": "mlp", "seed": run.seed, "tpt_epoch": None,
               "final": {"test_accuracy": acc, "nc1": 0.1}}  # fmt: skip
    if claims is not None:
        summary["claims"] = claims
    (run.run_dir / "summary.json").write_text(json.dumps(summary))
    if rows is not None:
        (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows() -> list[dict]:
    """An old run's metrics: nc1 falls, training error never reaches zero."""
    return [
        {"epoch": e, "train_error": 0.1 / e, "loss": 1.0 / e, "loss_nc1": 0.5 / e,
         "loss_nc23": 0.3 / e, "loss_perp": 0.2 / e, "nc1": 10.0 / e**3,
         "equinorm_means": 1 / e, "equiangular_means": 1 / e, "maxangle_means": 1 / e,
         "nc3": 1 / e, "nc4": 0.0, "snr": [2.0 * e, 1.0 * e]}
        for e in range(1, 21)
    ]  # fmt: skip


GAPS = [-0.5, -0.2, -0.3]  # MSE − CE per seed, points
T_975_2 = 0.95 * np.sqrt(2.0 / (4 * 0.975 * 0.025))  # Student t, 2 degrees of freedom


def test_sweep_reports_k_of_n_and_claim4_over_paired_seeds(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    spec = SweepSpec(presets=("digits-mlp-mse", "digits-mlp-ce"), seeds=(0, 1, 2))
    runs = {(r.config["loss"], r.seed): r for r in expand(spec, out)}
    for seed, gap in enumerate(GAPS):
        mse_claims = _claims(nc1_falls="fails") if seed == 1 else _claims()
        _finished(runs["mse", seed], acc=0.9 + gap / 100, claims=mse_claims)
        _finished(runs["ce", seed], acc=0.9, claims=_claims(perp_small="not applicable"))

    results = collect(list(runs.values()))
    pairing = sweep_pairing(results)
    assert [(p["mse_run"], p["ce_run"]) for p in pairing.pairs] == [
        (runs["mse", s].name, runs["ce", s].name) for s in range(3)
    ]
    assert pairing.unpaired == []
    (group,) = pairing.groups
    sem = float(np.std(GAPS, ddof=1)) / np.sqrt(3)
    assert group["value"] == pytest.approx(np.mean(GAPS))
    assert group["interval"] == pytest.approx(
        [np.mean(GAPS) - T_975_2 * sem, np.mean(GAPS) + T_975_2 * sem]
    )
    assert group["holds"] is True and group["n"] == 3

    assert run_sweep(spec, SweepOptions(out=out)) == 0  # all done: collect only
    rows = {r["name"]: r for r in csv.DictReader((out / "results.csv").open())}
    first = rows[runs["mse", 1].name]
    assert first["claim_nc1_falls"] == "fails" and first["claim_identity"] == "holds"
    assert rows[runs["ce", 0].name]["claim_perp_small"] == "not applicable"
    assert float(first["accuracy_gap"]) == pytest.approx(-0.2)
    assert {r["accuracy_gap_outcome"] for r in rows.values()} == {"holds"}
    manifest = json.loads((out / "sweep.json").read_text())
    assert [g["holds"] for g in manifest["accuracy_gap_groups"]] == [True]
    assert len(manifest["accuracy_gaps"]) == 3 and manifest["unpaired"] == []
    mse_group = next(g for g in manifest["claim_groups"] if g["loss"] == "mse")
    assert mse_group["n"] == 3
    assert mse_group["claims"]["nc1_falls"] == {
        "holds": 2, "fails": 1, "inconclusive": 0, "not applicable": 0}  # fmt: skip
    entry = next(e for e in manifest["runs"] if e["name"] == runs["ce", 0].name)
    assert entry["claim_outcomes"]["perp_small"] == "not applicable"
    printed = capsys.readouterr().out
    assert "claims over seeds (holds in k of n runs)" in printed
    assert "nc1_falls 2/3 (1 fails)" in printed and "perp_small 0/3 (3 not applicable)" in printed
    assert "MSE − CE test accuracy (claim 4)" in printed and "lies within ±1 point" in printed


def test_sweep_does_not_pair_runs_of_different_configurations(tmp_path: Path, capsys) -> None:
    """Issue 18: ``--preset tiny digits-mlp-ce`` paired a 64×2 MLP (wd 5e-4) with a 512×3
    BatchNorm MLP (wd 5e-3) and reported a −57 point gap that "fails"."""
    out = tmp_path / "sw"
    spec = SweepSpec(presets=("tiny", "digits-mlp-ce"), seeds=(0,), overrides=("epochs=3",))
    runs = {r.config["loss"]: r for r in expand(spec, out)}
    _finished(runs["mse"], acc=0.40, claims=_claims())
    _finished(runs["ce"], acc=0.97, claims=_claims())
    assert run_sweep(spec, SweepOptions(out=out)) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["accuracy_gaps"] == [] and manifest["accuracy_gap_groups"] == []
    reasons = {u["run"]: u["reason"] for u in manifest["unpaired"]}
    assert set(reasons) == {runs["mse"].name, runs["ce"].name}
    assert all(r.endswith("differs in model_kwargs, weight_decay") for r in reasons.values())
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert all(r["accuracy_gap"] == "" and r["accuracy_gap_outcome"] == "" for r in rows)
    printed = capsys.readouterr().out
    assert "not paired for claim 4" in printed and "fails" not in printed.split("claim 4")[-1]


def test_stale_or_missing_claims_are_computed_from_rows(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    spec = SweepSpec(presets=("digits-mlp-mse",), seeds=(0, 1))
    runs = expand(spec, out)
    stale = [{"id": c, "statement": c, "value": 1.0, "threshold": 1.0, "relation": "<",
              "holds": True, "note": ""} for c in CLAIM_IDS]  # fmt: skip
    _finished(runs[0], acc=0.9, claims=None, rows=_rows())
    _finished(runs[1], acc=0.9, claims=stale, rows=_rows())
    results = collect(runs)
    for result in results:
        by_id = {c["id"]: c for c in result.claims}
        assert list(by_id) == list(CLAIM_IDS)
        assert by_id["tpt_reached"]["holds"] is False  # from the rows: no TPT
    (group,) = sweep_seed_groups(results)
    assert group["n"] == 2 and group["claims"]["tpt_reached"]["fails"] == 2
    text = format_verdicts(results, sweep_pairing(results), [group])
    assert "tpt_reached 0/2 (2 fails" in text
