"""A run directory's training: open (lock, config.yaml first) or resume one, train it, and
measure one of its checkpoints (``ncmse measure``).

The loop itself is :class:`ncmse.train.loop.Trainer`; this module decides which run directory it
writes and with which configuration: a resume continues only the configuration its checkpoint
was trained with (:func:`check_resume`), and a run of ``ncmse ufm`` is recognised
(:func:`is_ufm_run`) and refused with what to run instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ncmse.collapse.min_samples import check_min_samples
from ncmse.errors import BusyError, CheckpointError, ConfigError, InputError
from ncmse.rundir.checkpoint import load_checkpoint
from ncmse.rundir.guard import (
    lock_run_dir,
    missing_dirs,
    release_run_dir,
    remove_empty_dirs,
    remove_new_run_dir,
)
from ncmse.rundir.reader import read_config, read_summary
from ncmse.rundir.writer import RunWriter, default_run_dir
from ncmse.train.config import Config, config_from_dict, is_run_config, parse_overrides, valid_keys
from ncmse.train.data import dataset_source
from ncmse.train.distributed import DistInfo, broadcast, init_distributed, process_group
from ncmse.train.loop import Trainer
from ncmse.train.runtime import resolve_device
from ncmse.train.setup import build_components, config_loss, measure_split
from ncmse.train.sinks import Checkpoints
from ncmse.ufm.config import UFMConfig
from ncmse.verdicts.pairing import RUN_CONTROL_KEYS
from ncmse.verdicts.record import run_verdicts

__all__ = [
    "RESUME_SAFE_KEYS",
    "check_resume",
    "config_of_run",
    "is_ufm_run",
    "measure_checkpoint",
    "open_run_dir",
    "record_data_source",
    "resume",
    "resume_config",
    "run_training",
    "train",
    "ufm_refusal",
]


#: config keys a resume may change (``ncmse train --resume RUN_DIR --set KEY=VALUE``): where and
#: how the run computes, what it prints and how often it saves (the keys that do not change a
#: run's result, :data:`ncmse.verdicts.pairing.RUN_CONTROL_KEYS`, but where its data is read
#: from) and its name; never what it computes — not the data, model, loss, λ, optimiser,
#: schedule (``epochs`` included: the learning-rate drops are fractions of it), precision or
#: measurement schedule
RESUME_SAFE_KEYS: frozenset[str] = (RUN_CONTROL_KEYS - {"data_dir"}) | {"name"}


def open_run_dir(
    cfg: Config,
    run_dir: str | os.PathLike[str] | None,
    *,
    overwrite: bool = False,
    dist_info: DistInfo | None = None,
) -> Path:
    """Rank 0 locks the run directory (default ``runs/<name>-<time>``) and writes
    ``config.yaml`` first (so a run killed at any later moment can be resumed); all ranks get
    its path. Release the claim with :func:`ncmse.rundir.guard.release_run_dir` (rank 0).

    Raises
    ------
    BusyError
        If another process writes the directory (on every rank: as InputError off rank 0).
    InputError
        If ``run_dir`` exists, is not empty and ``overwrite`` is false, or ``overwrite`` meets
        a directory that is not an ncmse run (on every rank).
    """
    info = dist_info or DistInfo()
    path, error = (str(run_dir) if run_dir is not None else None), None
    if info.is_main:
        path = str(run_dir if run_dir is not None else default_run_dir(cfg.name))
        created = missing_dirs(path)
        try:
            lock_run_dir(path, new=True, overwrite=overwrite, is_run_config=is_run_config)
        except (InputError, BusyError) as exc:
            error = exc
        except BaseException:  # e.g. no space for the lock file: no empty directory left
            remove_empty_dirs(created)
            raise
        else:
            try:
                RunWriter(path).write_config(cfg.to_dict())
            except BaseException:  # e.g. ENOSPC: leave nothing of this start behind
                remove_new_run_dir(path, created)
                raise
    path, message = broadcast((path, None if error is None else str(error)), info)
    if error is not None:
        raise error
    if message is not None:
        raise InputError(message)
    if info.is_main:
        print(f"ncmse train: run directory {path}", file=sys.stderr)
    return Path(path)


def record_data_source(cfg: Config) -> Config:
    """``cfg`` with ``data_dir`` set to the directory the dataset is read from (the run records
    the data it used), when the config left it to the default search."""
    if cfg.data_dir is not None or cfg.dataset == "digits" or ":" in cfg.dataset:
        return cfg

    source = dataset_source(cfg.dataset)
    return cfg if source is None else dataclasses.replace(cfg, data_dir=source)


def run_training(
    cfg: Config,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    resume_set: Iterable[str] = (),
) -> tuple[Path, dict[str, Any]]:
    """Start (or, with ``resume``, continue) a run; returns (run directory, final summary).

    Rank 0 holds the run directory's lock (:mod:`ncmse.rundir.guard`) while it trains. No report is
    drawn: ``ncmse train`` asks for it afterwards. A resume continues only the configuration its
    checkpoint was trained with (:func:`check_resume`); ``resume_set`` names the keys the user
    asked to change (:func:`resume_config`).

    Raises
    ------
    BusyError
        If another process writes the run directory.
    InputError
        If a new ``run_dir`` exists and ``overwrite`` is false.
    ConfigError
        If a resumed run's config differs from its checkpoint's (see :func:`check_resume`).
    DivergenceError
        If the objective becomes NaN/Inf (the last good checkpoint is kept).
    """
    dist_info = init_distributed(cfg)
    resolve_device(cfg.device, dist_info.local_rank)  # no CUDA: refuse before any file exists
    locked: Path | None = None
    with process_group(dist_info):
        try:
            if resume:
                path = Path(run_dir)
                if dist_info.is_main:
                    lock_run_dir(path, new=False)
                    locked = path
                ckpt = Checkpoints(path, enabled=False).load()
                changes = check_resume(cfg, ckpt, path, explicit=resume_set)
                trainer = Trainer.from_config(cfg, path, dist_info)
                if trainer.restore(ckpt, changes) and trainer.state.epoch >= cfg.epochs:
                    return path, trainer.finish()
            else:
                cfg = record_data_source(cfg)
                created = missing_dirs(run_dir) if run_dir is not None else None
                path = open_run_dir(cfg, run_dir, overwrite=overwrite, dist_info=dist_info)
                locked = path if dist_info.is_main else None
                try:
                    trainer = Trainer.from_config(cfg, path, dist_info)
                except BaseException:
                    if locked is not None:  # nothing trained: leave nothing of it behind
                        remove_new_run_dir(path, created)
                        locked = None
                    raise
            return path, trainer.fit()
        finally:
            if locked is not None:
                release_run_dir(locked)


def _same_value(a: Any, b: Any) -> bool:
    """Config values equal (``1`` and ``1.0`` are; YAML may turn one into the other)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return bool(a == b)


def check_resume(
    cfg: Config,
    ckpt: dict[str, Any] | None,
    run_dir: str | os.PathLike[str],
    *,
    explicit: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The changes a resume makes to the configuration its checkpoint was trained with.

    A run directory's rows must come from one configuration: every key of ``cfg`` (config.yaml
    with the ``--set`` of the resume) must equal the checkpoint's, but the keys in ``explicit``
    (which :func:`resume_config` allows only among :data:`RESUME_SAFE_KEYS`). Keys a checkpoint
    of an older ncmse lacks count at their defaults.

    Returns
    -------
    list of dict
        ``{"epoch", "key", "old", "new"}`` per accepted change (empty without a checkpoint:
        the run then starts again from epoch 0 and no row of another configuration is kept).

    Raises
    ------
    CheckpointError
        If the checkpoint belongs to another run (its run id is not the one in summary.json).
    ConfigError
        If a key outside ``explicit`` differs; the message names each key, both values, and
        what to do.
    """
    if ckpt is None:
        return []
    path = Path(run_dir)
    ours = (read_summary(path, strict=False) or {}).get("run_id")
    theirs = ckpt.get("run_id")
    if ours and theirs and ours != theirs:
        raise CheckpointError(
            f"cannot resume {str(path)!r}: its checkpoint belongs to another run (run id "
            f"{theirs}, this run's is {ours}; copied from another run directory?); put the "
            "run's own checkpoint back or start the run again with --overwrite"
        )
    saved = {**Config().to_dict(), **dict(ckpt.get("config") or {})}
    now = cfg.to_dict()
    differing = [k for k in now if not _same_value(saved.get(k), now[k])]
    allowed = set(explicit)
    refused = [k for k in differing if k not in allowed]
    if refused:
        raise ConfigError(_refusal(path, int(ckpt["epoch"]), refused, saved, now))
    return [
        {"epoch": int(ckpt["epoch"]), "key": k, "old": saved.get(k), "new": now[k]}
        for k in differing
    ]


def _refusal(
    path: Path, epoch: int, keys: list[str], saved: dict[str, Any], now: dict[str, Any]
) -> str:
    """The one-line message of a resume whose config.yaml differs from its checkpoint's."""
    diffs = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in keys)
    text = (
        f"cannot resume {str(path)!r}: its config.yaml differs from the configuration its "
        f"checkpoint (epoch {epoch}) was trained with: {diffs}; a run's rows must come from one "
        "configuration: put the checkpoint's values back in config.yaml"
    )
    unsafe = [k for k in keys if k not in RESUME_SAFE_KEYS]
    if unsafe:
        why = " (the learning-rate drops are fractions of epochs)" if "epochs" in unsafe else ""
        text += (
            f", or start a new run (ncmse train --out NEW_DIR) to change {', '.join(unsafe)}{why}"
        )
    safe = [k for k in keys if k in RESUME_SAFE_KEYS]
    if safe:
        sets = " ".join(f"--set {k}=VALUE" for k in safe)
        text += f"; to change {', '.join(safe)} on resume, pass {sets} with --resume"
    return text


def resume_config(
    run_dir: str | os.PathLike[str], overrides: Iterable[str] = ()
) -> tuple[Config, list[str]]:
    """The config of a resume: ``RUN_DIR/config.yaml`` with the ``--set`` items ``overrides``.

    Returns
    -------
    (Config, list of str)
        The config and the keys the overrides set.

    Raises
    ------
    ConfigError
        If an override names a key outside :data:`RESUME_SAFE_KEYS` (it would change what the
        run computes: a new run must do that), or an invalid value.
    """
    parsed = parse_overrides(overrides)
    unsafe = sorted(set(parsed) - RESUME_SAFE_KEYS)
    if unsafe:
        raise ConfigError(
            f"--resume takes the config from RUN_DIR; --set {', '.join(unsafe)} would change what "
            "the run computes (its rows must come from one configuration): start a new run "
            "with --out to change it; with --resume, --set may change only "
            f"{', '.join(sorted(RESUME_SAFE_KEYS))}"
        )
    cfg = config_of_run(run_dir)
    if not parsed:
        return cfg, []
    merged = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    merged.update(parsed)
    return config_from_dict(merged, where="the run's config with --set"), sorted(parsed)


def train(
    cfg: Config,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Start a new training run; returns the content of ``summary.json``.

    Parameters
    ----------
    cfg : Config
        Resolved configuration.
    run_dir : path, optional
        Output directory; default ``runs/<name>-<YYYYmmdd-HHMMSS>``.
    overwrite : bool
        Replace the files ncmse wrote in an existing run directory (refused for a directory
        that is not an ncmse run).
    """
    return run_training(cfg, run_dir, overwrite=overwrite)[1]


def config_of_run(run_dir: str | os.PathLike[str]) -> Config:
    """The config stored in ``RUN_DIR/config.yaml`` (for a resume).

    Raises
    ------
    InputError
        If ``RUN_DIR`` does not exist, or has no ``config.yaml`` (the run was killed before
        writing it: the message says how to start it again), or the file is damaged, or it is
        a run of ``ncmse ufm`` (the message says so and what to run instead).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(
            f"cannot resume {str(path)!r}: no such directory; pass the RUN_DIR of a run started "
            "by ncmse train"
        )
    if is_ufm_run(path):
        raise InputError(ufm_refusal(path, "it cannot be resumed (it has no training to continue)"))
    data = read_config(path)
    if data is None:
        raise InputError(
            f"cannot resume {str(path)!r}: it has no config.yaml, so the run was killed before "
            f"it wrote its first file (nothing to resume); start it again with ncmse train "
            f"--out {path} --overwrite and the same --config/--set"
        )
    where = f"the run's config {str(path / 'config.yaml')!r}"
    return config_from_dict(data, where=where)


def resume(run_dir: str | os.PathLike[str], overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Continue a run from its checkpoint with the config in ``RUN_DIR``; returns the summary.

    A run killed before its first checkpoint starts again from epoch 0 with its config; a
    damaged ``last.pt`` falls back to ``prev.pt``; stale temporary files are removed.
    ``overrides`` (``key=value``) may change only :data:`RESUME_SAFE_KEYS`; each change is
    recorded in summary.json ``resume_changes``. A config.yaml edited after the checkpoint in
    any other way is refused (:func:`check_resume`).
    """
    cfg, explicit = resume_config(run_dir, overrides)
    return run_training(cfg, run_dir, resume=True, resume_set=explicit)[1]


def measure_checkpoint(
    checkpoint: str,
    *,
    split: str = "train",
    lam: float | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    min_samples: int | None = None,
) -> dict[str, Any]:
    """Measure a checkpoint; returns ``{"checkpoint", "epoch", "run_id", "lam", "lam_source",
    "train": {...}, ...}`` (``run_id`` None for a checkpoint of an older ncmse).

    With the checkpoint's measurement rows, also the run's ``claims`` and ``central_path_fit``
    (:func:`ncmse.verdicts.record.run_verdicts`), recomputed from them, and ``rows_to_epoch``, the
    last epoch of those rows.

    A damaged ``last.pt`` falls back to the run's ``prev.pt`` (with a message naming both).

    Raises
    ------
    InputError
        For ``lam`` < 0 or not finite, ``batch_size`` < 1, or CUDA requested without CUDA.
        Also for the directory of an ``ncmse ufm`` run (which has no network to measure).
    CheckpointError
        If the checkpoint (and its fallback) is missing, damaged or not an ncmse checkpoint.
    """
    if lam is not None and not (math.isfinite(lam) and lam >= 0):
        raise InputError(f"--lam {lam!r} must be a finite number >= 0; omit it to use the run's λ")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size {batch_size} must be a positive integer, e.g. 1024")
    check_min_samples(min_samples)
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but CUDA is not available here; use --device cpu or auto")
    if is_ufm_run(checkpoint):
        raise InputError(ufm_refusal(checkpoint, "it has no network checkpoint to measure"))
    ckpt, used = load_checkpoint(checkpoint, fix="pass another checkpoint, or train the run again")
    run_cfg = config_from_dict(ckpt["config"], where=f"the config stored in {used}")
    cfg = dataclasses.replace(run_cfg, device=device, lam=run_cfg.lam if lam is None else lam)
    comps = build_components(cfg, resolve_device(cfg.device))
    comps.model.load_state_dict(ckpt["model"])
    bundle = comps.bundle
    out: dict[str, Any] = {
        "checkpoint": str(used),
        "epoch": ckpt.get("epoch"),
        "run_id": ckpt.get("run_id"),
        "lam": comps.loss.lam,
        "lam_source": comps.loss.lam_source,
    }
    splits = ("train", "test") if split == "both" else (split,)
    for name in splits:
        x, y = (
            (bundle.train_x, bundle.train_y) if name == "train" else (bundle.test_x, bundle.test_y)
        )
        out[name] = measure_split(
            comps.model,
            comps.loss,
            x.to(comps.device),
            y.to(comps.device),
            num_classes=bundle.num_classes,
            batch_size=cfg.measure_batch_size if batch_size is None else batch_size,
            memory_budget_bytes=cfg.memory_budget_bytes,
            min_samples=min_samples,
        )
    rows = ckpt.get("rows") or []
    if rows:  # the run's verdicts (SPEC §7, §9), recomputed from its rows up to this checkpoint
        out["rows_to_epoch"] = max(int(r["epoch"]) for r in rows)

        out.update(
            run_verdicts(rows, loss=cfg.loss, tpt_epoch=ckpt.get("tpt_epoch"),
                         lam_exact=config_loss(run_cfg, bundle.num_classes).exact,
                         config=run_cfg.to_dict())
        )  # fmt: skip
    return out


def is_ufm_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a run of ``ncmse ufm`` (not of ``ncmse train``): its summary.json
    says ``kind: ufm``, or its config.yaml holds the keys of a UFM experiment (``n``, ``p``,
    ``omega0`` ...) rather than a training config's."""
    path = Path(path)
    if not path.is_dir():
        return False
    summary = read_summary(path, strict=False) or {}
    if summary.get("kind") == "ufm":
        return True
    config = read_config(path, strict=False) or {}
    ufm_only = {f.name for f in dataclasses.fields(UFMConfig)} - set(valid_keys())
    return bool(config) and summary.get("kind") != "train" and bool(ufm_only & set(config))


def ufm_refusal(path: str | os.PathLike[str], command: str) -> str:
    """The message of ``command`` (what it cannot do) given the UFM run directory ``path``."""
    return (
        f"{str(path)!r} is a run of ncmse ufm (the unconstrained features model), not of ncmse "
        f"train: {command}; its measurements are in its metrics.csv and omega.csv (see them "
        f"with ncmse report {path}); to run it again: ncmse ufm --out NEW_DIR with its options "
        "(config.yaml)"
    )
