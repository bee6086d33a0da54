"""Training checkpoints that survive kills, full disks and bit rot.

Two files in ``RUN_DIR/checkpoints/``:

* ``last.pt`` — the newest checkpoint;
* ``prev.pt`` — the one before it (the fallback when ``last.pt`` turns out unusable).

:func:`save_checkpoint` serialises the state in memory first (a full disk then fails with a plain
``OSError``, not half-way through ``torch.save``), writes it to a temporary file beside the target
(``.last.pt.<random>.tmp``, the pattern of :mod:`ncmse.rundir.atomic`), ``fsync`` s it, then rotates
atomically: ``last.pt`` is hard-linked to ``prev.pt`` (``rename`` where the file system has no
hard links) and the temporary file renamed onto ``last.pt``; the directory is ``fsync`` ed. At
every instant ``last.pt`` is a complete checkpoint (old or new), whatever kills the process.

:func:`load_checkpoint` verifies a file before trusting it: the zip container ``torch.save``
writes must be complete and every record must match its CRC-32 (this catches truncation, zero
length, random bytes and flipped bits), ``torch.load`` must succeed, and the payload must be a
dict with the required keys. When ``last.pt`` fails it falls back to ``prev.pt`` with a one-line
message naming both files; when neither is usable it raises :class:`CheckpointError` saying why
and how to start again.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ncmse.errors import CheckpointError
from ncmse.rundir.atomic import fault_point, fsync_directory, write_temp

__all__ = [
    "LAST",
    "PREV",
    "REQUIRED_KEYS",
    "TEMP_PATTERN",
    "checkpoint_paths",
    "load_checkpoint",
    "remove_stale_temps",
    "save_checkpoint",
    "verify_checkpoint",
]

LAST = "last.pt"
PREV = "prev.pt"
#: keys every training checkpoint holds
REQUIRED_KEYS: tuple[str, ...] = ("model", "config", "epoch")
#: temporary files of :func:`ncmse.rundir.atomic.atomic_write` / :func:`save_checkpoint`
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def checkpoint_paths(where: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """``(checkpoint, fallback)`` for a run directory, a ``checkpoints/`` folder or a file.

    The fallback is the sibling ``prev.pt`` when the checkpoint is a ``last.pt``, else None.
    """
    path = Path(where)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        return folder / LAST, folder / PREV
    if path.name == LAST:
        return path, path.with_name(PREV)
    return path, None


def save_checkpoint(state: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``folder/last.pt``, keeping the former ``last.pt`` as ``prev.pt``.

    A ``last.pt`` that fails verification is not rotated onto a good ``prev.pt``.

    Returns
    -------
    Path
        ``folder/last.pt``.
    """
    import torch  # lazy here and in _read: importing ncmse.rundir loads no torch

    folder = Path(folder)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    tmp = write_temp(folder / LAST, data, site=LAST)
    last, prev = folder / LAST, folder / PREV
    try:
        if last.is_file() and (not prev.is_file() or _container_ok(last)):
            _rotate(last, prev)
        fault_point(f"{LAST}:rotate")
        os.replace(tmp, last)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(folder)
    return last


def _rotate(last: Path, prev: Path) -> None:
    """Make ``prev`` the current ``last`` atomically (``last`` itself stays in place)."""
    if prev.is_file() and os.path.samefile(last, prev):
        return  # rotated already (a save killed before its final rename)
    link = prev.with_name(f".{prev.name}.rotate.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(last, link)
    except OSError:  # no hard links here (FAT, some network file systems): copy instead
        shutil.copyfile(last, link)
    os.replace(link, prev)
    link.unlink(missing_ok=True)  # rename(2) is a no-op when both names are one file


def _container_ok(path: Path) -> bool:
    """Cheap check before rotating: a complete zip whose records match their CRCs."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def verify_checkpoint(
    path: str | os.PathLike[str], required: Iterable[str] = REQUIRED_KEYS
) -> str | None:
    """Why ``path`` is not a usable checkpoint, or None when it is (see module docstring)."""
    return _read(Path(path), tuple(required))[1]


def _read(path: Path, required: tuple[str, ...]) -> tuple[dict[str, Any] | None, str | None]:
    import torch

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    if size == 0:
        return None, "empty (0 bytes)"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
            return None, "truncated (the zip archive torch.save writes is incomplete)"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return None, f"corrupt (record {bad} fails its CRC check)"
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to decode means "not usable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = "truncated or corrupt" if size < 1024 or "zip" in reason.lower() else "unreadable"
        return None, f"{kind} ({type(exc).__name__}{': ' + reason[:120] if reason else ''})"
    if not isinstance(obj, dict):
        return None, f"not an ncmse checkpoint (holds a {type(obj).__name__}, not a dict)"
    missing = [k for k in required if k not in obj]
    if missing:
        return None, f"not an ncmse training checkpoint (no {', '.join(missing)})"
    return obj, None


def load_checkpoint(
    where: str | os.PathLike[str],
    *,
    required: Iterable[str] = REQUIRED_KEYS,
    announce: Callable[[str], None] | None = None,
    fix: str = "start the run again with --overwrite",
) -> tuple[dict[str, Any], Path]:
    """Load and verify a checkpoint, falling back from ``last.pt`` to ``prev.pt``.

    Parameters
    ----------
    where : path
        Run directory, its ``checkpoints/`` folder, or a checkpoint file.
    required : iterable of str
        Keys the checkpoint must hold.
    announce : callable, optional
        Receives the one-line fallback message (default: printed to stderr).
    fix : str
        What to do when no checkpoint is usable (ends the error message).

    Returns
    -------
    (dict, Path)
        The checkpoint and the file it came from.

    Raises
    ------
    CheckpointError
        If neither file is usable; the message names each file and why.
    """
    path, fallback = checkpoint_paths(where)
    required = tuple(required)
    obj, why = _read(path, required)
    if obj is not None:
        return obj, path
    if why == "missing" and fallback is None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; pass RUN_DIR/checkpoints/last.pt or RUN_DIR"
        )
    reasons = [f"{path} is {why}"]
    if fallback is not None:
        obj, why_prev = _read(fallback, required)
        if obj is not None:
            message = (
                f"ncmse: checkpoint {path} is {why}; using the previous one, {fallback} "
                f"(epoch {obj.get('epoch')})"
            )
            (announce or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
            return obj, fallback
        if why_prev != "missing":
            reasons.append(f"{fallback.name} is {why_prev}")
    raise CheckpointError(f"no usable checkpoint: {'; '.join(reasons)}; {fix}")


def remove_stale_temps(folders: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete ncmse's own temporary files (``.NAME.XXXXXXXX.tmp``) left by a killed writer.

    Call only while holding the directory's lock (:mod:`ncmse.rundir.lock`): no live writer of
    this directory can then own them.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if (TEMP_PATTERN.match(entry.name) or entry.name.endswith(".rotate.tmp")) and (
                entry.is_file() and not entry.is_symlink()
            ):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
    return removed
