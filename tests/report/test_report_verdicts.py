"""Claims and central-path fit in reports: run page, comparison page, CSVs (SPEC §7, §9)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from ncmse.report import load_run, write_comparison_report, write_run_report
from ncmse.report.verdicts import (
    central_path_section,
    claims_section,
    run_entries,
)
from ncmse.ufm.closed_form import projected_law
from ncmse.verdicts.central_path import CLOCK_RECONSTRUCTED
from ncmse.verdicts.claims import CLAIM_IDS
from ncmse.verdicts.pairing import SOURCE_STALE, distinct_labels, gap_verdict, pair_runs
from ncmse.verdicts.pairing import current_claims as current_claims_of
from ncmse.verdicts.record import SOURCE_COMPUTED, SOURCE_SUMMARY, run_central_path, run_claims

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
              summary_extra: dict | None = None, config: dict | None = None) -> Path:  # fmt: skip
    """A ``ncmse train``-like run directory (metrics.csv, summary.json, config.yaml).

    config.yaml is that of the ``tiny`` preset with the loss, the seed and ``config`` applied.
    """
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
    # no flow_time column (an older run): τ is rebuilt from the schedule, lr 0.1 × 10 steps per
    # epoch (N = 200, batch 20) and no drop, so τ = epoch
    schedule = {"epochs": 40, "lr": 0.1, "lr_milestones": [], "batch_size": 20}
    resolved = {**TINY, "name": f"tiny-{loss}", "loss": loss, "seed": seed, **schedule,
                **(config or {})}  # fmt: skip
    (path / "config.yaml").write_text(yaml.safe_dump(resolved))
    return path


#: a resolved config like the ``tiny`` preset's (a 64×2 MLP)
TINY = {"name": "tiny", "dataset": "toy", "model": "mlp",
        "model_kwargs": {"width": 64, "depth": 2, "batch_norm": False}, "loss": "mse",
        "epochs": 40, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "seed": 0}  # fmt: skip


def test_old_run_gets_claims_and_fit_computed_from_its_files(tmp_path):
    run = load_run(write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9))
    claims, source = run_claims(run)
    assert source == SOURCE_COMPUTED
    by_id = {c["id"]: c for c in claims}
    assert [c["id"] for c in claims] == list(CLAIM_IDS)
    assert by_id["tpt_reached"]["value"] == TPT
    first, last = (np.array(_omega(np.array([e], dtype=float))[0]) for e in (EPOCHS[0], EPOCHS[-1]))
    assert by_id["nc1_falls"]["value"] == pytest.approx(np.sum(first**-2) / np.sum(last**-2))
    assert by_id["nc2_nc3_nc4_fall"]["holds"] is False and "nc3" in _reason(
        by_id["nc2_nc3_nc4_fall"]
    )
    assert by_id["snr_equalises"]["holds"] is True
    fits, source = run_central_path(run)
    assert source == SOURCE_COMPUTED
    projected = fits[0]
    assert (projected["law"], projected["n"], projected["C"], projected["e0"]) == (
        "projected", N_PER_CLASS, C, TPT)  # fmt: skip
    # csv holds repr(float): the fit of the file recovers the generating κ
    assert projected["kappa"] == pytest.approx(KAPPA, rel=1e-6)
    assert projected["follows"] is True and projected["clock_source"] == CLOCK_RECONSTRUCTED
    assert fits[1]["rms_log_residual"] > 1e-3  # the other law does not fit exactly


def test_recorded_verdicts_win_over_recomputation(tmp_path):
    recorded = [{"id": cid, "statement": "s", "value": 1.0, "threshold": 1e-10, "noise": None,
                 "holds": False, "reason": "recorded"} for cid in CLAIM_IDS]  # fmt: skip
    fit = [{"law": "projected", "n": 1, "C": 2, "e0": 3, "clock": "lr_steps", "kappa": 42.0,
            "rms_log_residual": 0.5, "points": 7, "reason": None}]  # fmt: skip
    run = load_run(
        write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9,
                  summary_extra={"claims": recorded, "central_path_fit": fit})
    )  # fmt: skip
    assert run_claims(run) == (recorded, SOURCE_SUMMARY)
    assert run_central_path(run) == (fit, SOURCE_SUMMARY)
    # a fit recorded on the epoch clock (no "clock") is stale: refitted on flow time
    stale = [{k: v for k, v in f.items() if k != "clock"} for f in fit]
    (tmp_path / "r" / "summary.json").write_text(
        json.dumps({**json.loads((tmp_path / "r" / "summary.json").read_text()),
                    "central_path_fit": stale})
    )  # fmt: skip
    fits, source = run_central_path(load_run(tmp_path / "r"))
    assert source == SOURCE_COMPUTED and fits[0]["kappa"] == pytest.approx(KAPPA, rel=1e-6)


def _reason(claim: dict) -> str:
    return claim.get("reason") or claim.get("note") or ""


_REASONS = {"holds": "", "fails": "misses the threshold by more than 3 noise",
            "inconclusive": "within noise of the threshold",
            "not applicable": "not applicable: not a square-loss run"}  # fmt: skip


def current_claims(**outcomes: str) -> list[dict]:
    """Claim records in the current schema (SPEC §7): every id holds unless ``outcomes`` says
    otherwise (``perp_small="inconclusive"``)."""
    records = []
    for cid in CLAIM_IDS:
        outcome = outcomes.get(cid, "holds")
        records.append(
            {"id": cid, "statement": f"statement of {cid}", "value": 12.5, "threshold": 10.0,
             "noise": 0.0371, "holds": {"holds": True, "fails": False}.get(outcome),
             "reason": _REASONS[outcome]}
        )  # fmt: skip
    return records


def test_run_report_opens_with_the_verdicts_in_words(tmp_path):
    """Each of the four outcomes has its own word, mark and colour; only "holds" gets a tick,
    and value, threshold, noise and reason are on the page before anything else."""
    claims = current_claims(perp_small="inconclusive", perp_falls="not applicable",
                            nc1_falls="fails")  # fmt: skip
    run_dir = write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9,
                        summary_extra={"claims": claims})  # fmt: skip
    text = write_run_report(run_dir).read_text()
    assert "? inconclusive" in text and "– not applicable" in text
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", text)
    assert headings[:2] == ["Run summary", "Verdicts on the paper's claims"]
    summary = text[text.index('id="summary"') : text.index('id="claims"')]
    assert 'id="fig-summary"' in summary and 'class="summary-verdicts"' in summary
    assert "1 fail</span> (<code>nc1_falls</code>)" in summary
    assert "1 inconclusive</span> (<code>perp_small</code>)" in summary
    section = text[text.index('id="claims"') : text.index("<h2>Run</h2>")]
    assert SOURCE_SUMMARY in section
    rows = {cid: re.search(rf"<tr><td><code>{cid}</code></td>.*?</tr>", section).group(0)
            for cid in CLAIM_IDS}  # fmt: skip
    expected = {"perp_small": ("unsure", "? inconclusive"), "nc1_falls": ("bad", "✗ fails"),
                "perp_falls": ("na", "– not applicable")}  # fmt: skip
    for cid, row in rows.items():
        css, words = expected.get(cid, ("ok", "✓ holds"))
        assert f'class="verdict {css}"' in row and words in row, cid
        assert ("✓" in row) == (cid not in expected), cid  # no tick on anything but holds
        assert "0.0371" in row and "12.5" in row, cid
    assert "≥ 10" in rows["nc1_falls"] and "≤ 10" in rows["perp_small"]  # the record's threshold
    assert "within noise of the threshold" in rows["perp_small"]
    assert "not applicable: not a square-loss run" in rows["perp_falls"]
    lead = section[: section.index("<table>")]
    n_hold = len(CLAIM_IDS) - 3
    assert f"{n_hold} hold</span>" in lead and "1 fail</span> (<code>nc1_falls</code>)" in lead
    assert "1 inconclusive</span> (<code>perp_small</code>)" in lead
    assert "1 not applicable</span> (<code>perp_falls</code>)" in lead
    assert "is not evidence for the paper" in lead


def test_stale_recorded_claims_are_recomputed_from_rows(tmp_path):
    """Claims recorded in an older format (relation/note, no noise) are not shown as they are:
    the report re-evaluates them from the run's rows."""
    stale = [{"id": cid, "statement": "s", "value": 999.0, "threshold": 1.0, "relation": ">",
              "holds": True, "note": "recorded by an old version"}
             for cid in CLAIM_IDS]  # fmt: skip
    run = load_run(write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9,
                             summary_extra={"claims": stale}))  # fmt: skip
    claims, source = current_claims_of(run)
    assert source == SOURCE_STALE
    by_id = {c["id"]: c for c in claims}
    assert by_id["tpt_reached"]["value"] == TPT
    assert by_id["nc2_nc3_nc4_fall"]["holds"] is False  # nc3 rises in the rows
    assert all(c.get("value") != 999.0 for c in claims)
    fresh = current_claims()
    run = load_run(write_run(tmp_path / "f", loss="mse", seed=0, accuracy=0.9,
                             summary_extra={"claims": fresh}))  # fmt: skip
    assert current_claims_of(run) == (fresh, SOURCE_SUMMARY)


def test_run_report_links_figures_and_central_path(tmp_path):
    run_dir = write_run(tmp_path / "r", loss="mse", seed=0, accuracy=0.9)
    text = write_run_report(run_dir).read_text()
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", text)
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
    # κ of the projected law, in its table cell (a bare "3000" could match the embedded image)
    assert "<td>3.00e+03</td>" in path_html
    assert "follows</span>" in path_html and "natural log" in path_html


def test_run_without_tpt_says_why_there_is_no_fit(tmp_path):
    run = load_run(write_run(tmp_path / "r", loss="ce", seed=0, accuracy=0.9, tpt=False))
    fits, source = run_central_path(run)
    section = central_path_section(fits, source)
    assert section.count("no TPT: training error never reached zero") == 2
    claims, source = run_claims(run)
    section = claims_section(claims, source, ())
    assert "not a square-loss run" in section
    assert "fail</span> (<code>tpt_reached</code>" in section


# ------------------------------------------------------------------ pairs, seeds, claim 4


def _rows(path: Path, scope: str | None = None) -> list[dict]:
    rows = list(csv.DictReader(path.read_text().splitlines()))
    return [r for r in rows if scope is None or r["scope"] == scope]


@pytest.mark.slow
def test_runs_of_different_configs_are_not_paired(tmp_path):
    """The mis-pairing of issue 18: a 64×2 MLP (wd 5e-4) MSE run and a 512×3 BatchNorm MLP
    (wd 5e-3) CE run of the same dataset, model name and seed are not a pair."""
    dirs = [
        write_run(tmp_path / "tiny", loss="mse", seed=0, accuracy=0.40),
        write_run(tmp_path / "big-ce", loss="ce", seed=0, accuracy=0.97,
                  config={"model_kwargs": {"width": 512, "depth": 3, "batch_norm": True},
                          "weight_decay": 5e-3}),
    ]  # fmt: skip
    out = tmp_path / "cmp"
    text = write_comparison_report(dirs, out).read_text()
    rows = _rows(out / "accuracy_gaps.csv")
    assert not any(r.get("accuracy_gap_pp") for r in rows)  # no gap: nothing to compare
    assert [r["scope"] for r in rows] == ["unpaired", "unpaired"]
    assert rows[0]["mse_run"] == "tiny" and rows[1]["ce_run"] == "big-ce"
    assert all("differs in model_kwargs, weight_decay" in r["reason"] for r in rows)
    assert "fails" not in {r["outcome"] for r in rows}
    assert "Unpaired runs" in text and "differs in model_kwargs, weight_decay" in text


@pytest.mark.parametrize(
    ("ce_config", "paired", "named"),
    [
        ({}, True, ""),  # only the loss (and the name) differ
        ({"mse_reduction": "sum_classes", "lam": 0.01, "rescale_k": 2.0}, True, ""),  # loss keys
        ({"report": False, "num_threads": 4, "quiet": True}, True, ""),  # run control
        ({"lr": 0.05}, True, ""),  # selected per loss (SPEC §6)
        ({"weight_decay": 5e-3}, False, "weight_decay"),
        ({"epochs": 41}, False, "epochs"),
        ({"model_kwargs": {"width": 65, "depth": 2, "batch_norm": False}}, False, "model_kwargs"),
        ({"momentum": 0.5}, False, "momentum"),  # absent from the MSE config: its default 0.9
        ({"momentum": 0.9}, True, ""),
    ],
)
def test_pairing_ignores_only_loss_and_run_control_keys(tmp_path, ce_config, paired, named):
    runs = [
        load_run(write_run(tmp_path / "m", loss="mse", seed=3, accuracy=0.9)),
        load_run(write_run(tmp_path / "c", loss="ce", seed=3, accuracy=0.9, config=ce_config)),
    ]
    pairing = pair_runs(run_entries(runs))
    assert len(pairing.pairs) == int(paired)
    if paired:
        assert (pairing.pairs[0]["mse_run"], pairing.pairs[0]["ce_run"]) == ("m", "c")
    else:
        assert [u["run"] for u in pairing.unpaired] == ["m", "c"]
        assert all(u["reason"].endswith(f"differs in {named}") for u in pairing.unpaired)


def test_unpaired_runs_say_why(tmp_path):
    dirs = [
        write_run(tmp_path / "diverged", loss="mse", seed=0, accuracy=0.1,
                  summary_extra={"status": "diverged"}),
        write_run(tmp_path / "ce", loss="ce", seed=0, accuracy=0.9),
        write_run(tmp_path / "ce-again", loss="ce", seed=0, accuracy=0.9),
        write_run(tmp_path / "mse", loss="mse", seed=0, accuracy=0.9),
        write_run(tmp_path / "rescaled", loss="rescaled_mse", seed=0, accuracy=0.9),
    ]  # fmt: skip
    (dirs[0] / "config.yaml").unlink()
    pairing = pair_runs(run_entries([load_run(d) for d in dirs]))
    assert pairing.pairs == []
    reasons = {u["run"]: u["reason"] for u in pairing.unpaired}
    assert reasons["diverged"].startswith("status diverged")
    assert "ambiguous" in reasons["ce"] and "ambiguous" in reasons["mse"]
    assert "neither MSE nor cross-entropy" in reasons["rescaled"]


def _t3_cdf(t: float) -> float:
    x = t / math.sqrt(3.0)
    return 0.5 + (x / (1.0 + x * x) + math.atan(x)) / math.pi


def _bisect(f, lo: float, hi: float) -> float:
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


#: 97.5 % quantiles of Student's t from closed forms (ν = 1, 2) and the ν = 3 CDF, not scipy
T_975 = {
    1: math.tan(math.pi * 0.475),
    2: 0.95 * math.sqrt(2.0 / (4 * 0.975 * 0.025)),
    3: _bisect(lambda t: _t3_cdf(t) - 0.975, 1.0, 10.0),
}


@pytest.mark.parametrize(
    ("gaps", "holds", "reason"),
    [
        ([-0.5, -0.2, -0.3, -0.4], True, "lies within ±1 point"),
        ([0.5, 0.5], True, "lies within ±1 point"),  # no spread: the interval is the mean
        ([1.0, 1.0], True, "lies within ±1 point"),  # 1 point exactly is within
        ([-5.0, -6.0, -5.5], False, "wholly outside"),
        ([3.0, 3.2], False, "wholly outside"),
        ([3.0, 2.0], None, "within noise of the threshold"),  # t_{0.975,1} = 12.7: wide
        ([0.5, 1.5, 0.2], None, "within noise of the threshold"),
        ([0.3], None, "one paired seed"),
        ([], None, "no paired seed"),
    ],
)
def test_claim4_is_decided_by_the_interval_over_seeds(gaps, holds, reason):
    verdict = gap_verdict(gaps)
    n = len(gaps)
    if n >= 2:  # float64 reference from the t table
        sem = float(np.std(gaps, ddof=1)) / np.sqrt(n)
        low, high = np.mean(gaps) - T_975[n - 1] * sem, np.mean(gaps) + T_975[n - 1] * sem
        assert verdict["interval"] == pytest.approx([low, high], rel=1e-12, abs=1e-12)
        assert verdict["noise"] == pytest.approx(sem, abs=1e-15)
        inside = low >= -1 - 1e-12 and high <= 1 + 1e-12
        outside = low > 1 or high < -1
        assert holds is (True if inside else False if outside else None)
    else:
        assert verdict["interval"] is None
    assert verdict["holds"] is holds and reason in verdict["reason"]


def _three_seeds(tmp_path: Path, gaps_pp: list[float], **config) -> list[Path]:
    dirs = []
    for seed, gap in enumerate(gaps_pp):
        ce = 0.90 + 0.001 * seed
        for loss, acc in (("mse", ce + gap / 100), ("ce", ce)):
            dirs.append(write_run(tmp_path / f"{loss}{seed}", loss=loss, seed=seed,
                                  accuracy=acc, config=config))  # fmt: skip
    return dirs


def test_comparison_reports_claim4_over_paired_seeds(tmp_path):
    gaps = [-0.5, -0.2, -0.3]
    dirs = _three_seeds(tmp_path, gaps)
    out = tmp_path / "cmp"
    text = write_comparison_report(dirs, out).read_text()
    pairs = _rows(out / "accuracy_gaps.csv", "pair")
    assert [(r["seed"], r["mse_run"], r["ce_run"]) for r in pairs] == [
        ("0", "mse0", "ce0"), ("1", "mse1", "ce1"), ("2", "mse2", "ce2")]  # fmt: skip
    assert [float(r["accuracy_gap_pp"]) for r in pairs] == pytest.approx(gaps)
    (group,) = _rows(out / "accuracy_gaps.csv", "group")
    sem = float(np.std(gaps, ddof=1)) / np.sqrt(3)
    assert float(group["accuracy_gap_pp"]) == pytest.approx(np.mean(gaps))
    assert float(group["ci_low"]) == pytest.approx(np.mean(gaps) - T_975[2] * sem)
    assert float(group["ci_high"]) == pytest.approx(np.mean(gaps) + T_975[2] * sem)
    assert (group["n"], group["outcome"]) == ("3", "holds")
    assert "lies within ±1 point" in text and "95 % interval" in text
    assert _unpaired_free(out)


def _unpaired_free(out: Path) -> bool:
    return not _rows(out / "accuracy_gaps.csv", "unpaired")


def test_one_pair_is_inconclusive_not_a_verdict(tmp_path):
    dirs = _three_seeds(tmp_path, [-2.0])
    out = tmp_path / "cmp"
    write_comparison_report(dirs, out)
    (group,) = _rows(out / "accuracy_gaps.csv", "group")
    assert group["outcome"] == "inconclusive" and "one paired seed" in group["reason"]
    assert group["ci_low"] == "" and float(group["accuracy_gap_pp"]) == pytest.approx(-2.0)


def test_claims_counted_k_of_n_over_seeds(tmp_path):
    """Runs that differ only by seed form a group: per claim, "holds in k of n"; a run with
    another lr is its own group."""
    outcomes = [{}, {"nc1_falls": "fails"}, {"nc1_falls": "inconclusive", "snr_equalises": "fails"}]
    dirs = [
        write_run(tmp_path / f"s{seed}", loss="mse", seed=seed, accuracy=0.9,
                  summary_extra={"claims": current_claims(**o)})
        for seed, o in enumerate(outcomes)
    ]  # fmt: skip
    dirs.append(write_run(tmp_path / "lr", loss="mse", seed=0, accuracy=0.9, config={"lr": 0.01},
                          summary_extra={"claims": current_claims()}))  # fmt: skip
    out = tmp_path / "cmp"
    text = write_comparison_report(dirs, out).read_text()
    groups = {}
    for row in _rows(out / "claims.csv", "group"):
        groups.setdefault(row["group"], {})[row["claim"]] = row
    assert len(groups) == 2
    seeds = next(g for label, g in groups.items() if "lr=0.1" in label)
    assert {k: seeds["nc1_falls"][k] for k in ("n", "holds", "fails", "inconclusive")} == {
        "n": "3", "holds": "1", "fails": "1", "inconclusive": "1"}  # fmt: skip
    assert (seeds["snr_equalises"]["holds"], seeds["snr_equalises"]["fails"]) == ("2", "1")
    assert seeds["identity"]["holds"] == "3"
    other = next(g for label, g in groups.items() if "lr=0.01" in label)
    assert other["identity"]["n"] == "1"
    per_run = _rows(out / "claims.csv", "run")
    assert len(per_run) == 4 * len(CLAIM_IDS)
    s2 = {r["claim"]: r for r in per_run if r["run"] == "s2"}
    assert s2["nc1_falls"]["outcome"] == "inconclusive"
    assert s2["nc1_falls"]["reason"] == "within noise of the threshold"
    assert s2["nc1_falls"]["noise"] == "0.0371"
    assert "holds in 1 of 3 (1 fails, 1 inconclusive)" in text
    assert "holds in 2 of 3 (1 fails)" in text


def test_runs_with_the_same_directory_name_keep_distinct_labels(tmp_path):
    """Issue 19.12: ``ncmse report a/base b/base`` names them a/base and b/base."""
    dirs = [
        write_run(tmp_path / "a" / "base", loss="mse", seed=0, accuracy=0.90),
        write_run(tmp_path / "b" / "base", loss="ce", seed=0, accuracy=0.905),
        write_run(tmp_path / "c" / "solo", loss="ce", seed=1, accuracy=0.905),
    ]
    out = tmp_path / "cmp"
    text = write_comparison_report(dirs, out).read_text()
    gaps = _rows(out / "accuracy_gaps.csv")
    paired = [r for r in gaps if r["mse_run"] and r["ce_run"] and r.get("scope", "pair") == "pair"]
    assert [(r["mse_run"], r["ce_run"]) for r in paired] == [("a/base", "b/base")]
    assert {r["run"] for r in _rows(out / "claims.csv", "run")} == {"a/base", "b/base", "solo"}
    (pair,) = _rows(out / "accuracy_gaps.csv", "pair")
    assert (pair["mse_run"], pair["ce_run"]) == ("a/base", "b/base")
    assert ">a/base<" in text and ">b/base<" in text
    assert distinct_labels(["x/a/base", "y/a/base", "y/b/base"]) == ["x/a/base", "y/a/base",
                                                                   "b/base"]  # fmt: skip
