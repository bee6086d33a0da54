"""``ncmse ufm``: run directory, figures and errors (exit code 2 with a message)."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def _held_by_another_process(run: Path) -> Iterator[None]:
    """A child process holds ``run``'s lock for the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from ncmse.rundir.lock import DirLock; "
         "lock = DirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


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
    # legends below the panels, off the data and labels; nothing outside the image
    assert {f.name: f.legends_over_data for f in again if f.legends_over_data} == {}
    assert {f.name: f.clipped for f in again if f.clipped} == {}
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--C", "0"], "--C 0: the model needs at least 2 classes"),
        (["--C", "1"], "at least 2 classes"),
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--device", "cuda:x"], "is not a device"),
    ],
)
def test_bad_class_count_and_device_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["ufm", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_cuda_without_cuda_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["ufm", "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("num_classes", range(2, 13))
def test_default_central_flow_works_for_every_class_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], num_classes: int
) -> None:
    """Defaults (n, p, central-t-end, rel-step) for C = 2..12: the central flow ends where Σ_W
    becomes numerically singular (recorded) rather than failing after the simulation."""
    out = tmp_path / "r"
    argv = ["ufm", "--C", str(num_classes), "--flow", "central", "--steps", "0", "--no-figures"]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert num_classes * (config["n"] - 1) >= config["p"] >= num_classes - 1
    info = summary["flows"]["central"]
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["flow"] == "central"]
    reached = info.get("t_reached", info["t_end"])
    assert float(rows[-1]["t"]) == pytest.approx(reached)
    assert ("stopped" in info) == (reached < info["t_end"])


def test_no_out_picks_a_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ufm", *SMALL, "--no-figures"]) == 0
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("ufm-C3-") and (made / "summary.json").is_file()
    assert str(made.relative_to(tmp_path)) in capsys.readouterr().out


def test_a_directory_held_by_another_process_is_not_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live run's lock refuses `ncmse ufm --overwrite` before any file of it is removed."""
    run = tmp_path / "r"
    assert main(["ufm", "--out", str(run), *SMALL, "--no-figures"]) == 0
    before = sorted(p.name for p in run.iterdir())
    with _held_by_another_process(run):
        argv = ["ufm", "--out", str(run), *SMALL, "--no-figures", "--overwrite"]
        assert main(argv) == 2
        assert "run directory" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize(
    "args",
    [["--lam", "-1"], ["--lam-h", "nan"], ["--lr", "80", "--flow", "projected"]],
)
def test_a_failed_run_leaves_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    run = tmp_path / "r"
    assert main(["ufm", "--out", str(run), *SMALL, "--no-figures", *args]) == 2
    assert capsys.readouterr().err.strip()
    assert not run.exists()
    assert main(["ufm", "--out", str(run), *SMALL, "--no-figures"]) == 0  # the path is reusable


@pytest.mark.slow
def test_report_of_a_run_another_process_writes_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ncmse report RUN` takes the run directory's lock for its page and figures."""
    run = tmp_path / "r"
    assert main(["ufm", "--out", str(run), *SMALL, "--no-figures"]) == 0
    with _held_by_another_process(run):
        assert main(["report", str(run)]) == 2
        assert "run directory" in capsys.readouterr().err
        assert not (run / "report.html").exists()
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()


def test_seed_out_of_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["ufm", "--out", str(out), *SMALL, "--seed", "99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert "--seed must be in [0, 2**63 - 1]" in err and "Traceback" not in err
    assert not out.exists()


def _ufm_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_train_resume_and_measure_of_a_ufm_run_say_what_it_is(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    killed = tmp_path / "killed"  # a UFM run killed before its summary: config.yaml only
    killed.mkdir()
    shutil.copy(run_dir / "config.yaml", killed / "config.yaml")
    for run in (run_dir, killed):
        before = sorted(p.name for p in run.iterdir())
        assert main(["train", "--resume", str(run)]) == 2
        line = _ufm_error(capsys)
        assert "is a run of ncmse ufm" in line and "cannot be resumed" in line, line
        assert "ncmse ufm --out NEW_DIR" in line and "unknown config key" not in line, line
        assert main(["measure", str(run)]) == 2
        line = _ufm_error(capsys)
        assert "is a run of ncmse ufm" in line and "no network checkpoint" in line, line
        assert f"ncmse report {run}" in line and "last.pt" not in line, line
        assert sorted(p.name for p in run.iterdir()) == before


def test_a_training_run_is_not_taken_for_a_ufm_run(tmp_path: Path) -> None:
    from ncmse.rundir.writer import RunWriter
    from ncmse.train.config import resolve_config
    from ncmse.train.run import is_ufm_run

    run = tmp_path / "train"
    run.mkdir()
    RunWriter(run).write_config(resolve_config("tiny").to_dict())
    assert not is_ufm_run(run)
    assert not is_ufm_run(tmp_path / "missing")
