"""``ncmse ufm``: run directory, figures and errors (exit code 2 with a message)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from ncmse.cli import main
from ncmse.report.ufm_figures import plot_ufm_run

SMALL = ["--n", "4", "--C", "3", "--p", "3", "--t-end", "1e3", "--central-t-end", "10",
         "--num-records", "6", "--steps", "200"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ufm") / "run"
    assert main(["ufm", "--out", str(out), *SMALL, "--rel-step", "0.05"]) == 0
    return out


def test_run_directory_contents(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kind"] == "ufm" and summary["status"] == "finished"
    assert set(summary["flows"]) == {"projected", "variant", "central"}
    assert summary["flows"]["projected"]["max_rel_error_omega"] < 1e-3
    assert "adaptive rel_step=0.05" in summary["flows"]["projected"]["step_rule"]
    assert "time" in summary["time_convention"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["n"] == 4 and config["num_classes"] == 3 and len(config["omega0"]) == 2
    with (run_dir / "omega.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["t", "flow", "j", "omega_sim", "omega_pred"]
    projected = [r for r in rows if r["flow"] == "projected"]
    assert len(projected) == 7 * 2
    for r in projected:
        assert abs(float(r["omega_sim"]) / float(r["omega_pred"]) - 1) < 1e-3
    assert all(r["omega_pred"] == "" for r in rows if r["flow"] == "central")
    with (run_dir / "metrics.csv").open() as fh:
        metrics = list(csv.DictReader(fh))
    assert {"t", "step", "flow", "nc1", "loss_perp", "snr_1", "snr_2", "nc1_pred"} <= set(
        metrics[0]
    )
    assert {r["flow"] for r in metrics} == {"projected", "variant", "central", "gd"}
    gd_rows = [r for r in metrics if r["flow"] == "gd"]
    assert gd_rows[-1]["step"] == "200"
    assert float(gd_rows[-1]["loss_perp_ratio"]) < float(gd_rows[0]["loss_perp_ratio"])


def test_figures_written(run_dir: Path, tmp_path: Path) -> None:
    stems = {"ufm_omega", "ufm_omega_ratio", "ufm_nc1", "ufm_nc234", "ufm_gd_loss"}
    for stem in stems:
        for ext in ("png", "svg"):
            path = run_dir / "figures" / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000
    again = plot_ufm_run(run_dir, tmp_path / "figs")
    assert {f.name for f in again} == stems and len(again) == 5
    assert all(f.png.is_file() and f.svg.is_file() for f in again)
    assert (run_dir / "report.html").is_file()


def test_refuses_non_empty_out(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ufm", "--out", str(run_dir), *SMALL, "--no-figures"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--C", "10", "--p", "5"], "p >= C - 1"),
        (["--omega0", "1,-2"], "strictly positive"),
        (["--omega0", "1,2,3"], "C - 1 = 2"),
        (["--n", "2", "--p", "4"], "cannot be whitened"),
        (["--dt", "1e6"], "too large"),
        (["--lr", "80", "--flow", "projected"], "diverged"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["ufm", "--out", str(tmp_path / "r"), *SMALL, "--no-figures", *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_plot_rejects_other_runs(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "train"}))
    from ncmse.errors import InputError

    with pytest.raises(InputError, match="not a 'ufm' run"):
        plot_ufm_run(tmp_path)
