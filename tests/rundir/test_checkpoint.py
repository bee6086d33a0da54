"""Checkpoints: rotation keeps the previous good one, verification catches every damaged file,
load falls back with a message naming both files, and stale temporary files are removed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ncmse.errors import CheckpointError
from ncmse.rundir.checkpoint import (
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    verify_checkpoint,
)


def _state(epoch: int) -> dict:
    return {"model": {"w": torch.full((300,), float(epoch))}, "config": {"seed": 0}, "epoch": epoch}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


DAMAGE = {
    "zero-length": lambda data: b"",
    "cut in half": lambda data: data[: len(data) // 2],
    "random bytes": lambda data: os.urandom(len(data)),
    "flipped bit in the weights": lambda data: _flip(data, data.index(b"\0\0\0\x40" * 8) + 9),
    "not a checkpoint": None,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_last_falls_back_to_prev_naming_both(tmp_path, damage):
    folder = tmp_path / "checkpoints"
    save_checkpoint(_state(1), folder)
    save_checkpoint(_state(2), folder)
    last = folder / "last.pt"
    if DAMAGE[damage] is None:
        torch.save({"weights": torch.zeros(3)}, last)
    else:
        last.write_bytes(DAMAGE[damage](last.read_bytes()))
    assert verify_checkpoint(last) is not None
    messages: list[str] = []
    ckpt, used = load_checkpoint(tmp_path, announce=messages.append)
    assert used == folder / "prev.pt" and ckpt["epoch"] == 1
    (message,) = messages
    assert str(last) in message and str(folder / "prev.pt") in message and "\n" not in message


def test_neither_usable_is_a_clear_error_with_the_fix(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(_state(1), folder)
    save_checkpoint(_state(2), folder)
    (folder / "last.pt").write_bytes(b"")
    (folder / "prev.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert "last.pt is empty" in msg and "prev.pt is" in msg and "--overwrite" in msg
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_rotation_keeps_previous_and_never_rotates_a_damaged_last(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(_state(epoch), tmp_path)
    assert load_checkpoint(tmp_path / "last.pt")[0]["epoch"] == 3
    assert load_checkpoint(tmp_path / "prev.pt")[0]["epoch"] == 2
    (tmp_path / "last.pt").write_bytes(b"\0" * 100)  # damaged: must not replace the good prev
    save_checkpoint(_state(4), tmp_path)
    assert load_checkpoint(tmp_path / "prev.pt")[0]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


KILLED_SAVE = textwrap.dedent(
    """
    import sys, torch
    from ncmse.rundir.checkpoint import save_checkpoint
    for epoch in (1, 2, 3):
        save_checkpoint({"model": {"w": torch.full((20000,), float(epoch))}, "config": {},
                         "epoch": epoch}, sys.argv[1])
    """
)


@pytest.mark.parametrize(("site", "last_epoch"), [("last.pt:3", 2), ("last.pt:rotate:3", 2)])
def test_kill_inside_a_save_leaves_a_good_checkpoint_and_a_temp_that_resume_removes(
    tmp_path, site, last_epoch
):
    env = {**os.environ, "NCMSE_FAULT_AT": site}
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], env=env, check=False)
    assert proc.returncode == -9
    ckpt, used = load_checkpoint(tmp_path)
    assert used.name == "last.pt" and ckpt["epoch"] == last_epoch
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert temps and all(p.name.startswith(".last.pt.") for p in temps)
    (tmp_path / "user.tmp").write_text("not ours")
    assert sorted(remove_stale_temps([tmp_path])) == sorted(temps)
    assert (tmp_path / "user.tmp").exists()
