"""SPEC §7 verdicts: hand-built measurement rows for which each claim holds, fails or is null."""

from __future__ import annotations

import copy
import doctest
import math

import numpy as np
import pytest

import ncmse.claims
from ncmse.claims import (
    CLAIM_IDS,
    accuracy_gaps,
    claim_columns,
    evaluate_claims,
    format_tally,
    tally,
    tpt_epoch_of,
)

EPOCHS = [1, 2, 4, 8, 16, 32, 64, 120]
TPT_INDEX = 3  # epoch 8


def collapse_rows(*, num_omega: int = 3) -> list[dict]:
    """An MSE run for which every claim holds: exact identity, TPT at epoch 8, collapse."""
    rows = []
    for i, epoch in enumerate(EPOCHS):
        loss = 0.5 * 0.6**i
        ratio = 0.3 * 0.5**i  # L_⊥/L
        perp = ratio * loss
        nc1_part = 0.4 * (loss - perp)
        omega = [(3.0 + i) * (1.0 + 0.5 * 0.5**i * j) for j in range(num_omega)][::-1]
        rows.append(
            {
                "epoch": epoch,
                "train_error": max(0.0, 0.3 - 0.1 * i),
                "accuracy": 1.0 - max(0.0, 0.3 - 0.1 * i),
                "loss": loss,
                "loss_nc1": nc1_part,
                "loss_nc23": loss - perp - nc1_part,
                "loss_perp": perp,
                "nc1": 5.0 * 0.2**i,
                "equinorm_means": 0.3 / (1 + i),
                "equiangular_means": 0.2 / (1 + i),
                "maxangle_means": 0.25 / (1 + i),
                "nc3": 0.9 / (1 + i),
                "nc4": max(0.0, 0.1 - 0.05 * i),
                "snr": omega,
                "test_nc1": 99.0,  # ignored: training split only
            }
        )
    return rows


def by_id(claims: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in claims}


def verdicts(rows, loss="mse", tpt=None) -> dict[str, dict]:
    tpt = tpt_epoch_of(rows) if tpt is None else tpt
    return by_id(evaluate_claims(rows, loss=loss, tpt_epoch=tpt))


def test_every_claim_holds_on_a_collapsing_mse_run():
    rows = collapse_rows()
    assert tpt_epoch_of(rows) == 8
    claims = evaluate_claims(rows, loss="mse", tpt_epoch=8)
    assert [c["id"] for c in claims] == list(CLAIM_IDS)
    for c in claims:
        assert set(c) >= {"id", "statement", "value", "threshold", "holds"}
        assert c["holds"] is True, c
    c = by_id(claims)
    assert c["identity"]["value"] <= 1e-15
    assert c["tpt_reached"]["value"] == 8
    # independent values: median of L_⊥/L over epochs 8..120 (indices 3..7), ratios of nc1
    assert c["perp_small"]["value"] == pytest.approx(0.3 * 0.5**5)
    assert c["perp_falls"]["value"] == pytest.approx(0.5**7)
    assert c["nc1_falls"]["value"] == pytest.approx(0.2**-7)
    assert c["nc1_falls_after_tpt"]["value"] == pytest.approx(0.2**-4)
    assert c["nc2_nc3_nc4_fall"]["value"] == 5
    spread = lambda i: 1.0 + 0.5 * 0.5**i * 2  # noqa: E731
    assert c["snr_equalises"]["value"] == pytest.approx(spread(7) / spread(3))
    assert format_tally(claims, report="r/report.html") == "claims: 8/8 hold; report: r/report.html"


def test_csv_form_rows_give_the_same_verdicts():
    rows = collapse_rows()
    csv_rows = []
    for row in rows:
        flat = {k: repr(v) for k, v in row.items() if k != "snr"}
        flat.update({f"snr_{j}": repr(w) for j, w in enumerate(row["snr"], start=1)})
        csv_rows.append(flat)
    assert evaluate_claims(csv_rows, loss="mse", tpt_epoch=8) == evaluate_claims(
        rows, loss="mse", tpt_epoch=8
    )


def test_identity_fails_on_a_residual_and_is_null_on_nan():
    rows = collapse_rows()
    rows[5]["loss_perp"] *= 1 + 1e-6
    c = verdicts(rows)["identity"]
    assert c["holds"] is False and c["value"] > 1e-10
    rows = collapse_rows()
    rows[2]["loss_nc23"] = math.nan
    c = verdicts(rows)["identity"]
    assert c["holds"] is None and c["value"] is None and "epoch 4" in c["note"]


def test_no_tpt_fails_tpt_reached_and_makes_post_tpt_claims_null():
    rows = collapse_rows()
    for row in rows:
        row["train_error"] = max(row["train_error"], 1 / 3000)
    c = verdicts(rows)
    assert tpt_epoch_of(rows) is None
    assert c["tpt_reached"]["holds"] is False and c["tpt_reached"]["value"] is None
    for cid in ("perp_small", "nc1_falls_after_tpt", "snr_equalises"):
        assert c[cid]["holds"] is None and "TPT" in c[cid]["note"]
    for cid in ("identity", "perp_falls", "nc1_falls", "nc2_nc3_nc4_fall"):
        assert c[cid]["holds"] is True


def test_tpt_at_the_last_measurement():
    rows = collapse_rows()
    c = verdicts(rows, tpt=120)
    assert c["perp_small"]["holds"] is True  # one measurement from TPT on
    assert c["perp_small"]["value"] == pytest.approx(0.3 * 0.5**7)
    for cid in ("nc1_falls_after_tpt", "snr_equalises"):
        assert c[cid]["holds"] is None and "last measurement" in c[cid]["note"]


def test_tpt_between_measurements_uses_the_next_one():
    c = verdicts(collapse_rows(), tpt=10)  # next measurement: epoch 16 (index 4)
    assert c["nc1_falls_after_tpt"]["value"] == pytest.approx(0.2**-3)


def test_perp_claims_fail_when_l_perp_rises():
    # the H200 ResNet18 MSE case: L_⊥/L rose from 0.08 to 0.105
    rows = collapse_rows()
    for i, row in enumerate(rows):
        ratio = 0.08 + 0.025 * i / (len(rows) - 1) + (0.2 if i >= TPT_INDEX else 0.0)
        total = row["loss_perp"] + row["loss_nc1"] + row["loss_nc23"]
        row["loss_perp"] = ratio * row["loss"]
        row["loss_nc23"] = row["loss"] - row["loss_perp"] - row["loss_nc1"]
        assert total == pytest.approx(row["loss"])
    c = verdicts(rows)
    assert c["perp_falls"]["holds"] is False and c["perp_falls"]["value"] > 1
    assert c["perp_small"]["holds"] is False and c["perp_small"]["value"] > 0.1
    assert c["identity"]["holds"] is True


def test_perp_claims_are_null_on_cross_entropy_runs():
    for loss in ("ce", "cross_entropy", "CE"):
        c = verdicts(collapse_rows(), loss=loss)
        for cid in ("perp_small", "perp_falls"):
            assert c[cid]["holds"] is None and c[cid]["value"] is None
            assert "square-loss" in c[cid]["note"]
        assert c["nc1_falls"]["holds"] is True
    c = verdicts(collapse_rows(), loss="rescaled_mse")
    assert c["perp_falls"]["holds"] is True


def test_perp_claims_are_null_when_the_decomposition_is_approximate():
    """lam_exact false (rescaled MSE with k ≠ 1, or another λ than training's): no L_⊥ verdict."""
    rows = collapse_rows()
    exact = by_id(evaluate_claims(rows, loss="rescaled_mse", tpt_epoch=8))
    assert exact["perp_small"]["holds"] is True and exact["perp_falls"]["holds"] is True
    c = by_id(evaluate_claims(rows, loss="rescaled_mse", tpt_epoch=8, lam_exact=False))
    for cid in ("perp_small", "perp_falls"):
        assert c[cid]["holds"] is None and "approximate" in c[cid]["note"], cid
    assert c["nc1_falls"]["holds"] is True and c["identity"]["holds"] is True


def test_nc1_thresholds():
    rows = collapse_rows()
    rows[-1]["nc1"] = rows[0]["nc1"] / 100.0
    assert verdicts(rows)["nc1_falls"]["holds"] is True  # ≥ 100
    rows[-1]["nc1"] = rows[0]["nc1"] / 99.0
    assert verdicts(rows)["nc1_falls"]["holds"] is False
    rows = collapse_rows()
    rows[-1]["nc1"] = rows[TPT_INDEX]["nc1"]  # stalls after TPT: ratio 1, not > 1
    c = verdicts(rows)["nc1_falls_after_tpt"]
    assert c["value"] == 1.0 and c["holds"] is False


def test_nan_values_never_hold():
    rows = collapse_rows()
    rows[-1]["nc1"] = math.nan
    c = verdicts(rows)
    assert c["nc1_falls"]["holds"] is None and c["nc1_falls"]["value"] is None
    assert c["nc1_falls_after_tpt"]["holds"] is None
    rows = collapse_rows()
    rows[5]["loss_perp"] = None  # an empty cell after TPT
    rows[5]["loss_perp_ratio"] = None
    assert verdicts(rows)["perp_small"]["holds"] is None
    rows = collapse_rows()
    rows[-1]["snr"] = [5.0, math.nan, 1.0]
    assert verdicts(rows)["snr_equalises"]["holds"] is None
    rows = collapse_rows()
    rows[0]["nc3"] = math.nan
    c = verdicts(rows)["nc2_nc3_nc4_fall"]
    assert c["holds"] is None and "nc3" in c["note"]


def test_nc2_nc3_nc4_counts_and_names_what_did_not_fall():
    rows = collapse_rows()
    rows[-1]["nc3"] = rows[0]["nc3"] * 2
    rows[-1]["equinorm_means"] = rows[0]["equinorm_means"]  # equal: not lower
    c = verdicts(rows)["nc2_nc3_nc4_fall"]
    assert c["value"] == 3 and c["holds"] is False
    assert "nc3" in c["note"] and "equinorm_means" in c["note"]
    rows = collapse_rows()
    rows[0]["nc4"] = rows[-1]["nc4"] = 0.0  # nc4 may stay equal (often exactly 0)
    assert verdicts(rows)["nc2_nc3_nc4_fall"]["holds"] is True


def test_snr_equalisation_fails_when_the_spread_grows():
    rows = collapse_rows()
    rows[-1]["snr"] = [40.0, 10.0, 5.0]
    c = verdicts(rows)["snr_equalises"]
    assert c["holds"] is False and c["value"] > 1
    rows = collapse_rows()
    rows[-1]["snr"] = [math.inf, 10.0, 9.0]  # exact collapse in one direction only
    assert verdicts(rows)["snr_equalises"]["holds"] is False
    rows = collapse_rows(num_omega=1)  # C = 2: one ω
    c = verdicts(rows)["snr_equalises"]
    assert c["holds"] is None and "single" in c["note"]


def test_c2_means_at_zero_throughout_count_as_fallen():
    """C = 2: equinorm/equiangular/max-angle of two centred means are 0 up to rounding."""
    rows = collapse_rows(num_omega=1)
    for name, (first, last) in {"equinorm_means": (0.0, 0.0), "equiangular_means": (0.0, 0.0),
                                "maxangle_means": (0.0, 2.2e-16)}.items():  # fmt: skip
        rows[0][name], rows[-1][name] = first, last
    c = verdicts(rows)["nc2_nc3_nc4_fall"]
    assert c["value"] == 5 and c["holds"] is True
    rows[-1]["maxangle_means"] = 1e-3  # a real rise from 0 is still "did not fall"
    assert verdicts(rows)["nc2_nc3_nc4_fall"]["holds"] is False


def test_a_single_measurement_decides_no_first_vs_last_claim():
    rows = collapse_rows()[-1:]
    c = by_id(evaluate_claims(rows, loss="mse", tpt_epoch=rows[0]["epoch"]))
    for cid in ("perp_falls", "nc1_falls", "nc2_nc3_nc4_fall"):
        assert c[cid]["holds"] is None and "single measurement" in c[cid]["note"], cid
    assert c["identity"]["holds"] is True and c["tpt_reached"]["holds"] is True


def test_no_rows():
    claims = evaluate_claims([], loss="mse", tpt_epoch=None)
    assert [c["holds"] for c in claims] == [None] * len(CLAIM_IDS)


def test_tally_and_columns():
    rows = collapse_rows()
    rows[-1]["snr"] = [40.0, 10.0, 5.0]
    claims = evaluate_claims(rows, loss="ce", tpt_epoch=8)
    t = tally(claims)
    assert t["fail"] == ["snr_equalises"]
    assert t["not_applicable"] == ["perp_small", "perp_falls"]
    assert format_tally(claims) == (
        "claims: 5/6 hold; failing: snr_equalises; not applicable: perp_small, perp_falls"
    )
    cols = claim_columns(claims)
    assert list(cols) == [f"claim_{cid}" for cid in CLAIM_IDS]
    assert cols["claim_perp_small"] is None and cols["claim_snr_equalises"] is False
    assert claim_columns(None) == {f"claim_{cid}": None for cid in CLAIM_IDS}


def test_evaluation_does_not_modify_rows():
    rows = collapse_rows()
    before = copy.deepcopy(rows)
    evaluate_claims(rows, loss="mse", tpt_epoch=8)
    assert rows == before


def run(name, loss, seed, acc, dataset="fashionmnist", model="cnn"):
    return {"name": name, "dataset": dataset, "model": model, "seed": seed, "loss": loss,
            "test_accuracy": acc}  # fmt: skip


def test_accuracy_gaps_pair_mse_and_ce_of_the_same_dataset_model_seed():
    runs = [
        run("m0", "mse", 0, 0.8680),
        run("c0", "ce", 0, 0.8713),
        run("m1", "mse", 1, 0.8723),
        run("c1", "cross_entropy", 1, 0.8570),
        run("m2", "mse", 2, 0.9000),
        run("c2", "ce", 2, 0.8900),  # exactly 1 point
        run("r0", "rescaled_mse", 0, 0.5),  # not paired
        run("c9", "ce", 9, 0.8),  # no partner
        run("m5", "mse", 5, None),
        run("c5", "ce", 5, 0.8),
        run("m0b", "mse", 0, 0.7, model="resnet18"),
    ]
    gaps = accuracy_gaps(runs)
    by = {(g["model"], g["seed"]): g for g in gaps}
    assert by[("cnn", "0")]["value"] == pytest.approx(-0.33)
    assert by[("cnn", "0")]["holds"] is True
    assert by[("cnn", "0")]["mse_run"] == "m0" and by[("cnn", "0")]["ce_run"] == "c0"
    assert by[("cnn", "1")]["value"] == pytest.approx(1.53) and by[("cnn", "1")]["holds"] is False
    assert by[("cnn", "2")]["value"] == pytest.approx(1.0) and by[("cnn", "2")]["holds"] is True
    assert by[("cnn", "9")]["holds"] is None and "MSE" in by[("cnn", "9")]["note"]
    assert by[("cnn", "5")]["holds"] is None and by[("cnn", "5")]["value"] is None
    assert by[("resnet18", "0")]["holds"] is None  # no CE partner on that network
    assert all(g["threshold"] == 1.0 for g in gaps)


def test_accuracy_gaps_refuse_ambiguous_pairs():
    gaps = accuracy_gaps(
        [run("m0", "mse", 0, 0.8), run("m0'", "mse", 0, 0.81), run("c0", "ce", 0, 0.8)]
    )
    assert len(gaps) == 1 and gaps[0]["holds"] is None and "2 MSE" in gaps[0]["note"]


def test_doctests():
    failures, tests = doctest.testmod(ncmse.claims)
    assert tests > 0 and failures == 0


def test_values_are_json_ready():
    import json

    rows = collapse_rows()
    rows[-1]["nc1"] = math.nan
    text = json.dumps(evaluate_claims(rows, loss="mse", tpt_epoch=8), allow_nan=False)
    assert "NaN" not in text
    assert np.isfinite(json.loads(text)[0]["value"])
