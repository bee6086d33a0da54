"""Guarding a training run directory: one writer at a time, overwrite only what ncmse wrote.

Every process that writes a run directory (``ncmse train``, ``ncmse train --resume``, the
training process a sweep starts) first calls :func:`lock_run_dir`, which

1. takes the directory's lock (:mod:`ncmse.rundir.lock`) for the rest of the process — a second
   trainer on the same directory is refused with a message naming the holder;
2. for a new run, refuses an occupied directory (unless ``overwrite``), and with ``overwrite``
   refuses a directory that is not an ncmse run, then deletes only ncmse's own files;
3. removes the temporary files a killed writer left behind (``.NAME.XXXXXXXX.tmp``).

What counts as ncmse's: the entries of :data:`RUN_FILES`, inside :data:`RUN_FOLDERS` the file
patterns listed there, the lock file and temporary files. A folder that still holds other files
after an overwrite is kept with them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ncmse.errors import InputError
from ncmse.rundir.checkpoint import TEMP_PATTERN, remove_stale_temps, verify_checkpoint
from ncmse.rundir.lock import LOCK_NAME, DirLock, lock_dir, unlock_dir
from ncmse.rundir.reader import read_summary

__all__ = [
    "RUN_FILES",
    "RUN_FOLDERS",
    "lock_run_dir",
    "clear_run_files",
    "is_ncmse_run",
    "missing_dirs",
    "release_run_dir",
    "remove_empty_dirs",
    "remove_new_run_dir",
]

#: seconds a trainer waits for a run directory's lock before it is refused
_LOCK_WAIT = 2.0
#: files ncmse writes at the top of a training run directory
RUN_FILES: tuple[str, ...] = (
    "config.yaml",
    "metrics.csv",
    "metrics.jsonl",
    "omega.csv",
    "summary.json",
    "report.html",
)
#: folders ncmse writes, with the patterns of the files it writes in them
RUN_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("last.pt", "prev.pt"),
    "tb": ("events.out.tfevents.*",),
    "figures": ("*.png", "*.svg", "*.pdf"),
}


def _visible_entries(path: Path) -> list[Path]:
    """Entries of ``path`` other than the lock file and stale temporary files."""
    return [e for e in path.iterdir() if e.name != LOCK_NAME and TEMP_PATTERN.match(e.name) is None]


def is_ncmse_run(
    path: str | os.PathLike[str], is_run_config: Callable[[Path], bool] | None = None
) -> bool:
    """Whether ``path`` holds a training run of ncmse (or one killed before its first file).

    Evidence: a ``summary.json`` of kind ``train`` or ``ufm``, a ``config.yaml`` that
    ``is_run_config`` accepts (the training layer's rule,
    :func:`ncmse.train.config.is_run_config`; None: config.yaml is no evidence), a checkpoint
    ncmse can verify, or nothing but ncmse's lock and temporary files.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    summary = read_summary(path, strict=False) or {}
    if summary.get("kind") in ("train", "ufm"):
        return True
    if is_run_config is not None and is_run_config(path / "config.yaml"):
        return True

    if verify_checkpoint(path / "checkpoints" / "last.pt") is None:
        return True
    entries = list(path.iterdir())
    return bool(entries) and all(e.name == LOCK_NAME or TEMP_PATTERN.match(e.name) for e in entries)


def clear_run_files(path: Path) -> list[Path]:
    """Delete ncmse's files in the run directory ``path``; returns what was kept of the rest."""
    kept: list[Path] = []
    for name in RUN_FILES:
        target = path / name
        if target.is_file() or target.is_symlink():
            target.unlink()
    for folder, patterns in RUN_FOLDERS.items():
        target = path / folder
        if not target.is_dir() or target.is_symlink():
            continue
        for entry in target.iterdir():
            ours = any(fnmatch.fnmatch(entry.name, p) for p in patterns)
            if (ours or TEMP_PATTERN.match(entry.name)) and entry.is_file():
                entry.unlink()
            elif entry.name.endswith(".rotate.tmp") and entry.is_file():
                entry.unlink()
            else:
                kept.append(entry)
        with contextlib.suppress(OSError):
            target.rmdir()  # only when empty
    return kept


def lock_run_dir(
    path: str | os.PathLike[str],
    *,
    new: bool,
    overwrite: bool = False,
    resumable: bool = True,
    is_run_config: Callable[[Path], bool] | None = None,
) -> DirLock:
    """Lock the run directory ``path`` for this process and make it ready to write.

    Parameters
    ----------
    path : path
        The run directory (created for a new run).
    new : bool
        A new run (``ncmse train --out``); False for ``--resume``.
    overwrite : bool
        New run only: replace the ncmse run that is there.
    resumable : bool
        Whether the command can continue an occupied directory (``ncmse train --resume``; not
        ``ncmse ufm``): only then does the refusal suggest ``--resume``.
    is_run_config : callable, optional
        Whether a ``config.yaml`` is an ncmse training config (evidence for ``overwrite``, see
        :func:`is_ncmse_run`).

    Returns
    -------
    DirLock
        Held until :func:`release_run_dir` or the end of the process.

    Raises
    ------
    BusyError
        If another process writes this directory.
    InputError
        An occupied directory without ``overwrite``; with ``overwrite``, a directory that is
        not an ncmse run; for a resume, a missing directory.
    """
    path = Path(path)
    if not new and not path.is_dir():
        raise InputError(
            f"cannot resume {str(path)!r}: no such directory; pass the RUN_DIR of a run started "
            "by ncmse train"
        )
    if path.exists() and not path.is_dir():
        raise InputError(f"run directory {str(path)!r} exists and is not a directory")
    resume = f"pass --resume {path} to continue it, " if resumable else "pass "
    occupied = InputError(
        f"run directory {str(path)!r} already exists; {resume}--overwrite to replace it, "
        "or --out with a new path"
    )
    if new and path.is_dir() and _visible_entries(path) and not overwrite:
        raise occupied
    if (
        new
        and overwrite
        and path.is_dir()
        and _visible_entries(path)
        and not is_ncmse_run(path, is_run_config)
    ):
        raise InputError(
            f"--overwrite refused: {str(path)!r} is not an ncmse run directory (no summary.json, "
            "config.yaml or checkpoint of ncmse) and is not empty; choose another --out or "
            "empty it yourself"
        )
    # a short wait: a sweep probing the lock (``is_locked``) holds it for microseconds
    lock = lock_dir(path, "run directory", wait=_LOCK_WAIT)
    try:
        if new and not overwrite and _visible_entries(path):
            raise occupied  # filled by another process between the check above and the lock
        remove_stale_temps([path, path / "checkpoints"])
        if new and overwrite:
            kept = clear_run_files(path)
            if kept:
                print(
                    f"ncmse: --overwrite kept {len(kept)} file(s) ncmse did not write, e.g. "
                    f"{kept[0]}",
                    file=sys.stderr,
                    flush=True,
                )
    except BaseException:
        release_run_dir(path)
        raise
    return lock


def release_run_dir(path: str | os.PathLike[str]) -> None:
    """Undo one :func:`lock_run_dir` of this process (the lock goes with the last one)."""
    unlock_dir(path)


def missing_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and those of its ancestors that do not exist, deepest first: what creating
    ``path`` creates (call before creating it; :func:`remove_new_run_dir` takes the list)."""
    missing: list[Path] = []
    current = Path(path).absolute()
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def remove_new_run_dir(path: str | os.PathLike[str], created: list[Path] | None = None) -> None:
    """Undo the start of a run that failed before training (data missing, bad model options,
    a full disk while writing config.yaml ...): ncmse's files and the lock go, then the
    directories this process created, if empty.

    Parameters
    ----------
    path : path
        The run directory.
    created : list of Path, optional
        What :func:`missing_dirs` said before the directory was made; default ``[path]``.
        A directory that existed before is kept.
    """
    path = Path(path)
    with contextlib.suppress(OSError):
        clear_run_files(path)
        remove_stale_temps([path])
    release_run_dir(path)
    with contextlib.suppress(OSError):
        (path / LOCK_NAME).unlink()
    remove_empty_dirs([path] if created is None else created)


def remove_empty_dirs(dirs: list[Path]) -> None:
    """``rmdir`` each of ``dirs`` in order (deepest first), stopping at one that is not empty."""
    for folder in dirs:
        try:
            folder.rmdir()
        except OSError:
            return
