"""Atomic file writes: a reader never sees a half-written file, and an interrupted write leaves
the previous version intact (temporary file ``.NAME.XXXXXXXX.tmp`` in the same directory, data
``fsync`` ed, then :func:`os.replace`). A writer killed mid-write leaves only such a temporary
file, which :func:`ncmse.rundir.checkpoint.remove_stale_temps` deletes on the next resume.

Testing hook (no-op unless set): ``NCMSE_FAULT_AT=<site>:<n>`` makes the process ``SIGKILL``
itself at the n-th (1-based) call of the write site ``<site>``: for a file written by
:func:`atomic_write`, ``<site>`` is its name (e.g. ``metrics.csv``, ``summary.json``,
``last.pt``) and the kill happens half-way through writing the temporary file;
``last.pt:rotate`` fires between the rotation ``last.pt -> prev.pt`` and the rename of the new
checkpoint. Several sites may be given, comma-separated.
"""

from __future__ import annotations

import io
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FAULT_ENV",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "fault_point",
    "fsync_directory",
    "write_temp",
]

#: environment variable of the fault-injection testing hook (see module docstring)
FAULT_ENV = "NCMSE_FAULT_AT"
_FAULT_COUNTS: dict[str, int] = {}


def fault_point(site: str) -> None:
    """SIGKILL this process if ``NCMSE_FAULT_AT`` names this call of ``site`` (testing hook)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _FAULT_COUNTS[site] = count = _FAULT_COUNTS.get(site, 0) + 1
    for item in spec.split(","):
        name, _, n = item.strip().rpartition(":")
        if name == site and n.isdigit() and int(n) == count:
            os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so that renames in it survive a power loss (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(
    path: str | os.PathLike[str], data: bytes | memoryview, site: str | None = None
) -> str:
    """Write ``data`` to a new temporary file beside ``path``, ``fsync`` ed; returns its name.

    The file gets the permissions a plain ``open`` would give (``mkstemp`` creates 0600). On
    any failure (``ENOSPC`` ...) the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            view = memoryview(data)
            half = len(view) // 2
            handle.write(view[:half])
            if site is not None and os.environ.get(FAULT_ENV):
                handle.flush()
                fault_point(site)
            handle.write(view[half:])
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on an in-memory buffer, then write it to ``path`` atomically."""
    buf = io.BytesIO()
    write(buf)
    return atomic_write_bytes(path, buf.getbuffer())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    tmp = write_temp(path, data, site=path.name)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory first, so a full disk
    gives a plain ``OSError``)."""
    import torch  # lazy: importing ncmse.rundir loads no torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))
