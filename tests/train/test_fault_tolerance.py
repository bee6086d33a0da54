"""Issue 12: runs, sweeps and the CLI survive kills, bad files and each other.

Each bad input must give one line naming the input and the fix, exit code 2, no traceback and
nothing half-written; ``--debug`` / ``NCMSE_DEBUG=1`` bring the traceback back.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from ncmse.cli import main

QUIET = ["quiet=true", "report=false", "tensorboard=false"]


def _sets(*items: str) -> list[str]:
    return [x for s in (*QUIET, *items) for x in ("--set", s)]


@pytest.fixture
def finished_run(tiny_run: Path) -> Path:
    """The session's tiny run (conftest.py): tiny, 2 epochs, quiet."""
    return tiny_run


def _one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and err.count(": error: ") == 1, err
    after = err.split(lines[0], 1)[1]
    assert not after.strip(), err  # nothing follows the error line
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ---- item 8: encodings, YAML, unwritable outputs, full disk ----------------------------------


def test_non_utf8_config_and_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, str(bad), "not UTF-8", "save it as UTF-8")
    assert not (tmp_path / "r").exists()
    assert main(["sweep", "-f", str(bad), "--out", str(tmp_path / "sw"), "--dry-run"]) == 2
    _one_line_error(capsys, str(bad), "not UTF-8")


def test_invalid_yaml_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\nlr: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    _one_line_error(capsys, str(bad), "not valid YAML", "fix the file")


def test_unwritable_json_is_one_line_and_debug_shows_the_traceback(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["measure", str(finished_run), "--json", str(blocker / "out.json")]
    assert main(argv) == 2
    _one_line_error(capsys, str(blocker))
    with pytest.raises(OSError):
        main(["--debug", *argv])
    monkeypatch.setenv("NCMSE_DEBUG", "1")
    with pytest.raises(OSError):
        main(argv)


def test_full_disk_during_a_run_is_one_line_and_leaves_no_temp_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import ncmse.rundir.atomic as fileio

    real = fileio.os.fsync
    calls = {"n": 0}

    def fsync_fails_third_time(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync_fails_third_time)
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", *_sets("epochs=2"), "--out", str(out)]) == 2
    _one_line_error(capsys, "no space left on the device", "ENOSPC", "free some space")
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_read_only_output_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro"))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["ufm", "--out", str(tmp_path / "ro"), "--no-figures"]) == 2
    _one_line_error(capsys, "read-only file system", str(tmp_path / "ro"), "writable")


# ---- items 3 and 11: ncmse measure ---------------------------------------------------------


def test_measure_rejects_bad_options_naming_them(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["measure", str(finished_run), "--batch-size", "0"]) == 2
    _one_line_error(capsys, "--batch-size 0")
    assert main(["measure", str(finished_run), "--lam", "-1"]) == 2
    line = _one_line_error(capsys, "--lam -1.0")
    assert "--set" not in line


def test_measure_non_checkpoint_and_damaged_checkpoints(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("hello, not a checkpoint\n")
    assert main(["measure", str(not_ckpt)]) == 2
    _one_line_error(capsys, str(not_ckpt), "another checkpoint")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    folder = run / "checkpoints"
    shutil.copy(folder / "last.pt", folder / "prev.pt")
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])
    assert main(["measure", str(run)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["checkpoint"] == str(folder / "prev.pt")
    assert str(folder / "last.pt") in captured.err and str(folder / "prev.pt") in captured.err
    (folder / "prev.pt").write_bytes(b"")
    assert main(["measure", str(run)]) == 2
    _one_line_error(capsys, "last.pt is truncated", "prev.pt is empty")


def test_measure_cuda_without_cuda(
    finished_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["measure", str(finished_run), "--device", "cuda"]) == 2
    _one_line_error(capsys, "--device cuda", "CUDA is not available")


def test_errors_in_the_environment_are_not_mistaken_for_bugs() -> None:
    from ncmse.errors import explain

    assert explain(ZeroDivisionError("bug")) is None
    assert explain(KeyError("bug")) is None
    assert "ENOSPC" in explain(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))


# ---- items 1, 3, 4, 5, 6, 7, 11: the run directory -------------------------------------------


def _metrics_without_wall_time(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "metrics.csv", encoding="utf-8") as fh:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(fh)]


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ncmse.lock"))
    return dst


@pytest.mark.slow
def test_second_trainer_on_a_run_directory_is_refused_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys
    import time

    from ncmse.rundir.lock import is_locked

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "ncmse", "train", "--config", "tiny", *_sets("epochs=500")]
    proc = subprocess.Popen([*argv, "--out", str(out)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert main(["train", "--resume", str(out)]) == 2
        _one_line_error(capsys, str(out), f"in use by pid {proc.pid}", "ncmse train", "kill it")
        assert main(["train", "--config", "tiny", "--out", str(out), "--overwrite"]) == 2
        _one_line_error(capsys, f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.wait()
    assert not is_locked(out)  # SIGKILLed holder: the kernel let go


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "run3"
    argv = ["train", "--config", "tiny", *_sets("epochs=3", "checkpoint_every=1")]
    assert main([*argv, "--out", str(out)]) == 0
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"last.pt", "prev.pt"}
    return out


def test_resume_from_a_damaged_last_pt_falls_back_to_prev_and_ends_identical(
    checkpointed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(checkpointed_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "running"  # as if killed after the damage
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert str(last) in err and str(run / "checkpoints" / "prev.pt") in err
    assert _metrics_without_wall_time(run) == _metrics_without_wall_time(checkpointed_run)
    for name in ("last.pt", "prev.pt"):
        (run / "checkpoints" / name).write_bytes(os.urandom(3000))
    assert main(["train", "--resume", str(run)]) == 2
    _one_line_error(capsys, "no usable checkpoint", "last.pt is", "prev.pt is", "--overwrite")


def test_resume_removes_stale_temp_files(
    checkpointed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(checkpointed_run, tmp_path / "run")
    stale = [
        run / ".metrics.csv.k2j4h5g6.tmp",
        run / ".summary.json.abcd_123.tmp",
        run / "checkpoints" / ".last.pt.zzzzzzzz.tmp",
    ]
    for path in stale:
        path.write_bytes(b"partial")
    mine = run / "notes.tmp"
    mine.write_text("the user's")
    assert main(["train", "--resume", str(run)]) == 0
    assert not any(p.exists() for p in stale) and mine.exists()


def test_overwrite_touches_only_what_ncmse_wrote(
    checkpointed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "project"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "figures").mkdir()
    (foreign / "checkpoints" / "model.ckpt").write_text("the user's weights")
    (foreign / "figures" / "plot.png").write_text("the user's figure")
    argv = ["train", "--config", "tiny", *_sets("epochs=1")]
    assert main([*argv, "--out", str(foreign), "--overwrite"]) == 2
    _one_line_error(capsys, "--overwrite refused", "not an ncmse run directory", str(foreign))
    assert (foreign / "checkpoints" / "model.ckpt").exists()
    assert (foreign / "figures" / "plot.png").exists()
    run = _copy_run(checkpointed_run, tmp_path / "run")
    (run / "checkpoints" / "notes.txt").write_text("the user's note")
    assert main([*argv, "--out", str(run), "--overwrite"]) == 0
    assert (run / "checkpoints" / "notes.txt").read_text() == "the user's note"
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 1
    assert not (run / "checkpoints" / "prev.pt").exists()  # the old run's files are gone
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv, "--out", str(empty), "--overwrite"]) == 0


def test_run_killed_before_config_or_checkpoint(
    checkpointed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    early = tmp_path / "early"
    early.mkdir()
    (early / ".ncmse.lock").write_text("")  # all a run killed right after its start leaves
    assert main(["train", "--resume", str(early)]) == 2
    _one_line_error(capsys, "killed before it wrote its first file", "--overwrite")
    assert main(["train", "--config", "tiny", *_sets("epochs=1"), "--out", str(early)]) == 0
    run = _copy_run(checkpointed_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")  # killed before the first checkpoint
    (run / "metrics.csv").write_text("epoch\n1\n")
    assert main(["train", "--resume", str(run)]) == 0
    assert _metrics_without_wall_time(run) == _metrics_without_wall_time(checkpointed_run)


def test_device_cuda_without_cuda_creates_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", *_sets("device=cuda"), "--out", str(out)]) == 2
    _one_line_error(capsys, "CUDA is not available")
    assert not out.exists()


def test_config_records_the_data_directory_actually_used(tmp_path: Path, monkeypatch) -> None:
    import ncmse.train.data as data
    from ncmse.train.config import resolve_config
    from ncmse.train.run import record_data_source

    system = tmp_path / "system"
    system.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (system / f"{stem}.gz").write_bytes(b"")
    monkeypatch.setattr(data, "SYSTEM_IDX_DIRS", {"mnist": (system,), "fashionmnist": ()})
    monkeypatch.setenv("NCMSE_DATA_DIR", str(tmp_path / "cache"))
    cfg = resolve_config("tiny", ["dataset=mnist"])
    assert record_data_source(cfg).data_dir == str(system.resolve())
    named = resolve_config("tiny", ["dataset=mnist", f"data_dir={tmp_path / 'mine'}"])
    assert record_data_source(named).data_dir == str(tmp_path / "mine")


def test_damaged_files_of_a_run_are_one_line_errors_naming_them(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    metrics = run / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes().replace(b"epoch", b"\xe9poch", 1))
    assert main(["report", str(run)]) == 2
    _one_line_error(capsys, str(metrics), "not UTF-8")
    config = run / "config.yaml"
    config.write_text("epochs: [1, 2\nlr: 0.1\n")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(run)]) == 2
    _one_line_error(capsys, str(config), "not valid YAML", "fix the file")
    after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    after.pop(".ncmse.lock", None)
    assert after == before  # nothing written (the lock file aside)


def test_explicit_data_dir_without_files_is_refused_and_leaves_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", *_sets("dataset=fashionmnist", "download=false")]
    assert main([*argv, "--data-dir", str(empty), "--out", str(out)]) == 2
    _one_line_error(capsys, f"the data_dir you named, {empty}", "t10k-images-idx3-ubyte[.gz]")
    assert not out.exists()


# ---- issue 19.11: a start that fails leaves nothing of itself behind --------------------------


@pytest.mark.parametrize("where", ["config.yaml", "lock file"])
def test_full_disk_at_the_start_of_a_run_leaves_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch, where: str
) -> None:
    import ncmse.rundir.lock
    import ncmse.rundir.writer

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    target = (ncmse.rundir.writer.RunWriter, "write_config") if where == "config.yaml" else (
        ncmse.rundir.lock.DirLock, "acquire")  # fmt: skip
    monkeypatch.setattr(*target, no_space)
    argv = ["train", "--config", "tiny", *_sets("epochs=1")]
    assert main([*argv, "--out", str(tmp_path / "new" / "deeper" / "run")]) == 2
    _one_line_error(capsys, "no space left on the device")
    assert list(tmp_path.iterdir()) == []
    mine = tmp_path / "mine"  # a directory the user made is kept, as it was
    mine.mkdir()
    assert main([*argv, "--out", str(mine)]) == 2
    _one_line_error(capsys, "no space left on the device")
    assert list(mine.iterdir()) == []
