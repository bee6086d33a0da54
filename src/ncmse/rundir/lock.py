"""Inter-process locks on directories: one writer per run directory, one sweep per sweep directory.

A lock is ``fcntl.flock(LOCK_EX)`` on a lock file that is never deleted. The kernel releases it
when the holding process ends, however it ends (``SIGKILL`` included), so there is no stale pid
to guess about and no half-written file to misread: whether the directory is busy is decided by
the kernel alone. After taking the lock the holder writes its pid, host and command into the
file; that text only makes error messages precise ("in use by pid 4242 (ncmse train ...)").

``flock`` locks belong to an open file description: a second :class:`DirLock` on the same
directory in the same process conflicts like another process would, and a child started with
:mod:`subprocess` does not inherit the lock (Python opens files non-inheritable). Within one
process, :func:`hold` nests: an inner request for a lock this process already holds is granted.

Local file systems and NFSv4 (where Linux maps ``flock`` to byte-range locks) are supported.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ncmse.errors import BusyError

__all__ = ["LOCK_NAME", "DirLock", "hold", "holder", "is_locked", "lock_dir", "unlock_dir"]

#: name of the lock file inside a locked directory
LOCK_NAME = ".ncmse.lock"

#: locks this process holds: resolved lock-file path -> (lock, nesting depth)
_HELD: dict[str, list[Any]] = {}


def _command() -> str:
    """This process's command line, shortened for a message (``python -m ncmse`` -> ``ncmse``)."""
    argv = list(sys.argv)
    if argv and (argv[0].endswith(("__main__.py", "/ncmse")) or argv[0] == "-m"):
        argv[0] = "ncmse"
    elif argv:
        argv[0] = os.path.basename(argv[0])
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


class DirLock:
    """Exclusive lock on a directory, held until :meth:`release` or the end of the process.

    Parameters
    ----------
    directory : path
        The directory to lock (created if missing).
    what : str
        How the directory is named in messages, e.g. ``"run directory"``.
    lock_name : str
        Lock file name inside ``directory``.
    """

    def __init__(
        self, directory: str | os.PathLike[str], what: str = "directory", lock_name: str = LOCK_NAME
    ) -> None:
        self.directory = Path(directory)
        self.what = what
        self.path = self.directory / lock_name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, wait: float = 0.0, poll: float = 0.1) -> DirLock:
        """Take the lock, waiting up to ``wait`` seconds for the holder to let go.

        Raises
        ------
        BusyError
            If another process (or another :class:`DirLock` of this process) holds it.
        OSError
            If the lock file cannot be created (read-only or missing parent directory ...).
        """
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        deadline = time.monotonic() + max(wait, 0.0)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() >= deadline:
                    raise BusyError(self.busy_message())
                time.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        data = (json.dumps(info) + "\n").encode()
        with contextlib.suppress(OSError):  # the text only serves messages
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        return self

    def release(self) -> None:
        """Let go of the lock (the lock file stays: deleting it would race with a new holder)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def busy_message(self) -> str:
        """``<what> X is in use by pid N (command) on host; wait for it or kill it``."""
        info = holder(self.directory, self.path.name)
        if info is None:
            who = "another process"
        else:
            who = f"pid {info.get('pid')} ({info.get('command', '?')})"
            if info.get("host") and info.get("host") != socket.gethostname():
                who += f" on host {info['host']}"
        return (
            f"{self.what} {str(self.directory)!r} is in use by {who}; wait for it to end or "
            "kill it, then try again"
        )

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a forgotten lock is closed with the object
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def holder(directory: str | os.PathLike[str], lock_name: str = LOCK_NAME) -> dict[str, Any] | None:
    """What the current holder wrote into the lock file (pid, host, command), or None.

    Only for messages: whether the lock is held is :func:`is_locked`'s question.
    """
    path = Path(directory) / lock_name
    for _ in range(5):  # the holder writes right after taking the lock: give it a moment
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            return data if isinstance(data, dict) else None
        time.sleep(0.01)
    return None


def is_locked(directory: str | os.PathLike[str], lock_name: str = LOCK_NAME) -> bool:
    """Whether some other lock holder (another process, or another lock object) holds it now."""
    path = Path(directory) / lock_name
    key = str(path.resolve()) if path.exists() else None
    if key is not None and key in _HELD:
        return False  # this process holds it
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe lock
    return False


def lock_dir(
    directory: str | os.PathLike[str], what: str = "directory", wait: float = 0.0
) -> DirLock:
    """Take the lock of ``directory`` for this process, or count one more use of it when this
    process already holds it (undo with :func:`unlock_dir`).

    Raises
    ------
    BusyError
        If another process holds it (after ``wait`` seconds).
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    key = str((path / LOCK_NAME).resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return _HELD[key][0]
    lock = DirLock(path, what).acquire(wait=wait)
    _HELD[key] = [lock, 1]
    return lock


def unlock_dir(directory: str | os.PathLike[str]) -> None:
    """Undo one :func:`lock_dir`; the lock is released with the last one."""
    key = str((Path(directory) / LOCK_NAME).resolve())
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _HELD[key]
        entry[0].release()


@contextlib.contextmanager
def hold(
    directory: str | os.PathLike[str], what: str = "directory", wait: float = 0.0
) -> Iterator[DirLock]:
    """Hold the lock of ``directory`` for the block; nested calls in one process are granted.

    Raises
    ------
    BusyError
        If another process holds it (after ``wait`` seconds).
    """
    lock = lock_dir(directory, what, wait)
    try:
        yield lock
    finally:
        unlock_dir(directory)
