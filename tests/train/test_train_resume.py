"""Exact resume after a process dies mid-run (subprocesses, CPU, deterministic)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import kill_after

SETS = [
    "quiet=true", "report=false", "tensorboard=false", "epochs=6", "num_threads=1",
    "model_kwargs={width: 128, depth: 2, batch_norm: true}",
]  # fmt: skip


def _train(args: list[str], crash_after: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ncmse", "train", *args]
    if crash_after is not None:  # killed (exit 3) right after epoch crash_after
        cmd = [sys.executable, kill_after.__file__, str(crash_after), "ncmse", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.pop("wall_time")
    return rows


def _sets(extra: list[str]) -> list[str]:
    return [x for s in [*SETS, *extra] for x in ("--set", s)]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(tmp_path: Path) -> None:
    sets = _sets(["checkpoint_every=2"])
    reference = tmp_path / "reference"
    assert _train([*sets, "--out", str(reference)]).returncode == 0

    run = tmp_path / "killed"
    died = _train([*sets, "--out", str(run)], crash_after=3)
    assert died.returncode == 3, died.stderr
    # with checkpoints every 2 epochs, epoch 3 was measured but not checkpointed (rows 0..3)
    assert [int(r["epoch"]) for r in _rows(run)] == [0, 1, 2, 3]
    resumed = _train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    assert _rows(run) == _rows(reference)
    assert len(_rows(run)) == 7  # epochs 0..6

    again = _train(["--resume", str(run)])  # a finished run just reports
    assert again.returncode == 0 and _rows(run) == _rows(reference)


# ---- issue 19.1: a run directory's rows come from one configuration ------------------------

TINY = ["--config", "tiny", *_sets(["epochs=4", "checkpoint_every=1"])]


@pytest.fixture(scope="module")
def killed_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two runs of one config killed after epoch 2, the same run uninterrupted, and one with
    checkpoints every 2 epochs killed after epoch 3 (rows to 3, last.pt at 2)."""
    root = tmp_path_factory.mktemp("killed")
    runs = {name: root / name for name in ("reference", "a", "b", "c")}
    assert _train([*TINY, "--out", str(runs["reference"])]).returncode == 0
    for name in ("a", "b"):
        died = _train([*TINY, "--out", str(runs[name])], crash_after=2)
        assert died.returncode == 3, died.stderr
    sparse = [*TINY, "--set", "checkpoint_every=2", "--out", str(runs["c"])]
    assert _train(sparse, crash_after=3).returncode == 3
    return runs


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ncmse.lock"))
    return dst


def _edit_config(run: Path, **values: object) -> None:
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("key", "value"), [("weight_decay", 5e-3), ("epochs", 8), ("lr", 0.2), ("seed", 1)]
)
def test_resume_refuses_a_config_edited_after_the_checkpoint(
    killed_pair: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key: str,
    value: object,
) -> None:
    from ncmse.cli import main

    run = _copy(killed_pair["a"], tmp_path / "run")
    _edit_config(run, **{key: value})
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".ncmse.lock"}
    assert main(["train", "--resume", str(run)]) == 2
    line = _error_line(capsys)
    assert f"{key} " in line and repr(value) in line and "one configuration" in line, line
    assert "--out NEW_DIR" in line, line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".ncmse.lock"}
    assert after == before  # nothing written


def test_resume_refuses_to_change_results_through_set(
    killed_pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncmse.cli import main

    run = _copy(killed_pair["a"], tmp_path / "run")
    for item in ("weight_decay=0.005", "epochs=8", "measure_test=false", "precision=fp32"):
        assert main(["train", "--resume", str(run), "--set", item]) == 2
        line = _error_line(capsys)
        assert item.split("=")[0] in line and "--resume takes the config" in line, line
    assert _rows(run) == _rows(killed_pair["a"])


def test_resume_accepts_an_explicit_safe_change_and_records_it(
    killed_pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from ncmse.cli import main

    run = _copy(killed_pair["a"], tmp_path / "run")
    _edit_config(run, device="cpu")  # edited by hand: refused until asked for explicitly
    assert main(["train", "--resume", str(run)]) == 2
    line = _error_line(capsys)
    assert "device 'auto' -> 'cpu'" in line and "--set device=VALUE" in line, line
    argv = ["train", "--resume", str(run), "--set", "device=cpu", "--set", "checkpoint_every=3"]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["resume_changes"] == [
        {"epoch": 2, "key": "device", "old": "auto", "new": "cpu"},
        {"epoch": 2, "key": "checkpoint_every", "old": 1, "new": 3},
    ]
    assert _rows(run) == _rows(killed_pair["reference"])
    reference = json.loads((killed_pair["reference"] / "summary.json").read_text())
    assert "resume_changes" not in reference and len(reference["run_id"]) == 32


def test_resume_refuses_a_checkpoint_of_another_run(
    killed_pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ncmse.cli import main

    run = _copy(killed_pair["a"], tmp_path / "run")
    for name in ("last.pt", "prev.pt"):  # same config, another run: its rows are not this run's
        (run / "checkpoints" / name).write_bytes(
            (killed_pair["b"] / "checkpoints" / name).read_bytes()
        )
    assert main(["train", "--resume", str(run)]) == 2
    line = _error_line(capsys)
    assert "belongs to another run" in line and "--overwrite" in line, line


# ---- issue 19.2 and 19.6: ncmse measure stores only the run's own, current verdicts -------


def _measure(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """``ncmse measure RUN`` (exit 0); returns its tally line."""
    from ncmse.cli import main

    assert main(["measure", str(run), *extra]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("claims:")]
    return line


def _summary_bytes(run: Path) -> bytes:
    return (run / "summary.json").read_bytes()


def test_measure_stores_the_verdicts_of_the_runs_own_last_checkpoint(
    killed_pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    for name in ("reference", "a"):  # finished, and killed right after a checkpoint
        run = _copy(killed_pair[name], tmp_path / name)
        summary = json.loads((run / "summary.json").read_text())
        summary.pop("claims", None)
        (run / "summary.json").write_text(json.dumps(summary))
        line = _measure(run, capsys)
        assert f"(stored in {run / 'summary.json'})" in line, line
        assert "claims" in json.loads((run / "summary.json").read_text())


def test_measure_does_not_store_verdicts_of_a_checkpoint_behind_the_rows(
    killed_pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(killed_pair["c"], tmp_path / "c")
    assert [int(r["epoch"]) for r in _rows(run)] == [0, 1, 2, 3]
    before = _summary_bytes(run)
    line = _measure(run, capsys)
    assert "not stored in summary.json" in line and "epoch 2" in line and "epoch 3" in line
    assert f"--resume {run}" in line, line
    assert _summary_bytes(run) == before


def test_measure_does_not_store_verdicts_of_another_runs_or_an_old_checkpoint(
    killed_pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    run = _copy(killed_pair["a"], tmp_path / "a")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes((killed_pair["b"] / "checkpoints" / "last.pt").read_bytes())
    before = _summary_bytes(run)
    line = _measure(run, capsys)
    assert "not stored" in line and "belongs to another run" in line, line
    assert _summary_bytes(run) == before
    state = torch.load(killed_pair["a"] / "checkpoints" / "last.pt", weights_only=False)
    del state["run_id"]  # as an older ncmse wrote it
    torch.save(state, last)
    line = _measure(run, capsys)
    assert "not stored" in line and "no run id" in line, line
    assert _summary_bytes(run) == before


def test_measure_on_a_read_only_run_directory_prints_and_stores_nothing(
    killed_pair: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import json

    import ncmse.rundir.lock

    run = _copy(killed_pair["reference"], tmp_path / "ro")

    def read_only(self, *args, **kwargs):  # what a read-only mount does to the lock file
        raise OSError(errno.EROFS, "Read-only file system", str(self.path))

    monkeypatch.setattr(ncmse.rundir.lock.DirLock, "acquire", read_only)
    before = _summary_bytes(run)
    out = tmp_path / "m.json"
    line = _measure(run, capsys, "--json", str(out))
    assert "nothing stored" in line and "Read-only file system" in line, line
    assert "--out" not in line
    assert json.loads(out.read_text())["epoch"] == 4
    assert _summary_bytes(run) == before
