"""Atomic writes keep the previous file when the write fails half-way."""

from __future__ import annotations

import os

import pytest
import torch

from ncmse.rundir.atomic import atomic_torch_save, atomic_write, atomic_write_text


def test_interrupted_write_keeps_old_file(tmp_path):
    path = tmp_path / "sub" / "metrics.csv"
    atomic_write_text(path, "old\n")

    def explode(handle):
        handle.write(b"half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, explode)
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(path.parent)) == ["metrics.csv"]  # no temporary file left behind


def test_permissions_follow_umask_and_torch_roundtrip(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    ckpt = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(ckpt)["w"], torch.arange(3))
