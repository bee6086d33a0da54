"""One exception family for every input ncmse rejects.

Each message says which input was wrong and how to fix it, in the manner of einops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

__all__ = [
    "NCMSEError",
    "InputError",
    "ShapeError",
    "LabelError",
    "NonFiniteError",
    "EmptyClassError",
    "SingularCovarianceError",
    "EmptyDataError",
    "ConfigError",
    "DataUnavailableError",
    "DivergenceError",
    "NCMSEWarning",
    "SamplingWarning",
    "BusyError",
    "CheckpointError",
    "explain",
    "warn_caller",
    "sigterm_raises",
]


class NCMSEError(Exception):
    """Base class of every error ncmse raises on purpose."""


class InputError(NCMSEError, ValueError):
    """An argument has an invalid value."""


class ShapeError(InputError):
    """Arrays whose shapes do not fit together."""


class LabelError(InputError):
    """Labels that are not integers in [0, num_classes)."""


class NonFiniteError(InputError):
    """NaN or Inf where finite numbers are required."""


class EmptyClassError(InputError):
    """A class with no samples, so its mean is undefined."""


class SingularCovarianceError(NCMSEError, ArithmeticError):
    """A covariance that must be invertible is (numerically) singular."""


class EmptyDataError(InputError):
    """A loader or array with no samples."""


class ConfigError(InputError):
    """An unknown configuration key or an invalid configuration value."""


class DataUnavailableError(NCMSEError, FileNotFoundError):
    """A dataset that is neither on disk nor downloadable."""


class DivergenceError(NCMSEError, FloatingPointError):
    """An optimisation or simulation that produced NaN/Inf or blew up."""


class NCMSEWarning(UserWarning):
    """A result that is valid but needs care: e.g. degenerate features (see ``NCResult.flags``)."""


class SamplingWarning(NCMSEWarning):
    """A loader that may not give each sample of its dataset exactly once (see
    ncmse.collapse.sampling)."""


class BusyError(NCMSEError):
    """A directory another ncmse process is writing (its lock is held)."""


class CheckpointError(InputError):
    """A checkpoint file that is missing, truncated, corrupt or not an ncmse checkpoint."""


#: errno -> (what happened, how to fix it) for the OS errors a user can cause and fix
_OS_FIXES: dict[str, tuple[str, str]] = {
    "ENOSPC": ("no space left on the device", "free some space or write elsewhere (--out ...)"),
    "EDQUOT": ("disk quota exceeded", "free some space or write elsewhere (--out ...)"),
    "EROFS": ("read-only file system", "write to a writable directory (--out ...)"),
    "EACCES": ("permission denied", "use a path you may read/write, or fix its permissions"),
    "EPERM": ("operation not permitted", "use a path you may read/write"),
    "ENOENT": ("no such file or directory", "check the path"),
    "ENOTDIR": ("a part of the path is not a directory", "check the path"),
    "EISDIR": ("is a directory, a file was expected", "pass a file path"),
    "EEXIST": ("already exists", "choose another path"),
    "ENAMETOOLONG": ("file name too long", "choose a shorter path"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n) and run again"),
}


def explain(exc: BaseException) -> str | None:
    """One line for an error the user can fix (ncmse's own errors and OS, encoding, YAML
    errors), or None for a genuine bug (which deserves its traceback).

    OS errors name the file when the system reports it and say how to fix the cause; a run
    interrupted that way keeps its last checkpoint, so ``--resume`` continues it afterwards.
    """
    if isinstance(exc, NCMSEError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        )
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, "")
        what, fix = _OS_FIXES.get(name, (exc.strerror or name or "system error", "check it"))
        files = [f for f in (exc.filename, exc.filename2) if f is not None]
        where = f": {' -> '.join(str(f) for f in files)}" if files else ""
        return f"{what}{where} ({name}); {fix}"
    text = str(exc)
    if isinstance(exc, RuntimeError) and (
        "PytorchStreamWriter" in text or "inline_container" in text
    ):
        return (
            "writing a file failed inside torch.save (disk full or the directory not writable?); "
            "free some space or write elsewhere"
        )
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        return f"invalid YAML ({' '.join(text.split())}); fix the file"
    return None


def warn_caller(message: str, category: type[Warning] = NCMSEWarning) -> None:
    """Warn with ``category``, located at the first caller outside the ncmse package (so the
    warning names the user's line, however deep inside ncmse it was raised)."""
    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@contextlib.contextmanager
def sigterm_raises(exc_type: type[BaseException]) -> Iterator[None]:
    """Turn SIGTERM into ``exc_type("signal 15")`` for the block (main thread only: elsewhere a
    no-op), so a terminated command ends as on Ctrl-C: one line, its files released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise exc_type(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
