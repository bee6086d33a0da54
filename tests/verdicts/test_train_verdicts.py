"""A training run records its SPEC §7 verdicts and SPEC §9 fit; the console ends with the tally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ncmse.cli import main
from ncmse.rundir.lock import DirLock
from ncmse.verdicts.claims import CLAIM_IDS, evaluate_claims
from ncmse.verdicts.record import end_of_run_lines

QUIET = ["quiet=true", "tensorboard=false"]


def _sets(*extra: str) -> list[str]:
    return [x for s in [*QUIET, *extra] for x in ("--set", s)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_train_records_claims_prints_tally_and_measure_recomputes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", *_sets("epochs=12", "lr=0.5", "report=true")]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    summary = json.loads((out / "summary.json").read_text())
    claims = summary["claims"]
    assert [c["id"] for c in claims] == list(CLAIM_IDS)
    # the recorded verdicts are those of the run's own rows
    rows = _jsonl(out / "metrics.jsonl")
    assert claims == json.loads(
        json.dumps(evaluate_claims(rows, loss="mse", tpt_epoch=summary["tpt_epoch"]))
    )
    assert {c["id"] for c in claims if c["id"] == "identity" and c["holds"]} == {"identity"}
    fits = summary["central_path_fit"]
    assert [f["law"] for f in fits] == ["projected", "variant"]
    assert all(f["n"] == 120 and f["C"] == 10 for f in fits)  # digits: 120 per class
    assert all(f["reason"] and f["clock"] == "lr_steps" for f in fits)
    assert all((f["kappa"] is None) == (f["rms_log_residual"] is None) for f in fits)
    # the console ends with the tally, naming report.html
    assert printed[-1].startswith("claims: ") and printed[-1].endswith(
        f"report: {out / 'report.html'}"
    )
    assert any(line.startswith("central path (") for line in printed[-4:-1])
    assert (out / "report.html").is_file()

    # ncmse measure recomputes them from the checkpoint's rows and stores them in summary.json
    broken = dict(summary, claims=[], central_path_fit=None)
    (out / "summary.json").write_text(json.dumps(broken))
    assert main(["measure", str(out), "--json", str(tmp_path / "m.json")]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["claims"] == claims and result["central_path_fit"] == fits
    assert json.loads((out / "summary.json").read_text())["claims"] == claims
    assert captured.err.strip().splitlines()[-1].startswith("claims: ")
    assert "stored in" in captured.err

    # a run directory that another writer holds is left alone (one writer per run directory)
    (out / "summary.json").write_text(json.dumps(broken))
    lock = DirLock(out, "run directory").acquire()
    try:
        assert main(["measure", str(out / "checkpoints" / "last.pt")]) == 0
    finally:
        lock.release()
    assert "not stored in summary.json" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["claims"] == []

    # verdicts of an earlier checkpoint (prev.pt) never replace those of the run's last one
    prev = out / "checkpoints" / "prev.pt"
    assert prev.is_file()
    assert main(["measure", str(prev)]) == 0
    assert "not the run's last checkpoint" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["claims"] == []


@pytest.mark.slow
def test_resumed_run_recomputes_its_verdicts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", *_sets("report=false"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "claims": None}))
    assert main(["train", "--resume", str(out)]) == 0  # finished: only the summary is rewritten
    again = json.loads((out / "summary.json").read_text())
    assert again["claims"] == summary["claims"] and again["claims"]


def test_end_of_run_lines() -> None:
    summary = {
        "final": {"epoch": 7, "train_error": 0.0, "nc1": 0.5, "loss_perp_ratio": 0.01},
        "tpt_epoch": 3,
        "lam": 0.0025,
        "central_path_fit": [
            {
                "law": "projected",
                "kappa": 1234.5,
                "rms_log_residual": 0.0412,
                "rms_log_residual_frozen": 0.5,
                "follows": True,
                "reason": "r",
            },
            {
                "law": "variant",
                "kappa": None,
                "follows": False,
                "reason": "ω do not grow after TPT",
            },
        ],
        "claims": [
            {"id": "identity", "holds": True},
            {"id": "nc1_falls", "holds": None, "reason": "within noise of the threshold: …"},
            {"id": "perp_small", "holds": None, "reason": "not applicable: a ce run"},
            {"id": "snr_equalises", "holds": False},
        ],
    }
    lines = end_of_run_lines(summary, "r/report.html")
    assert lines[0] == (
        "final (epoch 7): train_error 0, nc1 0.5, L_perp/L 0.01, tpt_epoch 3, lam 0.0025"
    )
    assert lines[1] == (
        "central path (projected flow law): follows — κ = 1.23e+03, rms residual ×1.04 "
        "(natural log 0.0412) vs ×1.65 holding ω at their TPT values"
    )
    assert lines[2] == (
        "central path (step-then-renormalise law): does not follow — ω do not grow after TPT"
    )
    assert lines[3] == (
        "claims: 1 hold, 1 fail (snr_equalises), 1 inconclusive (nc1_falls), 1 not applicable "
        "(perp_small); report: r/report.html"
    )


def test_an_approximate_decomposition_gets_no_l_perp_verdict(tmp_path: Path) -> None:
    """A rescaled MSE with k ≠ 1 records lam_exact false, and its L_⊥ claims are not applicable."""
    out = tmp_path / "r"
    sets = _sets("report=false", "epochs=2", "loss=rescaled_mse", "rescale_k=2", "rescale_m=1")
    assert main(["train", "--config", "tiny", *sets, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lam_exact"] is False
    claims = {c["id"]: c for c in summary["claims"]}
    for cid in ("perp_small", "perp_falls"):
        assert claims[cid]["holds"] is None and "approximate" in claims[cid]["reason"], cid
