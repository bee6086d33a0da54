"""Sweep specification and its expansion into runs with deterministic directory names.

A sweep is the product presets × seeds × learning rates × weight decays, with the same ``--set``
overrides applied to every run. Each run is resolved through
:func:`ncmse.train.config.resolve_config`
when the sweep is planned, so an invalid value fails before anything is started.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ncmse.errors import ConfigError
from ncmse.train.config import load_yaml_config, parse_overrides, read_yaml_mapping, resolve_config

__all__ = [
    "PAPER_LR_GRID",
    "RunSpec",
    "SweepSpec",
    "expand",
    "load_sweep_file",
    "lr_grid",
    "preset_stem",
    "run_name",
    "value_token",
]


def _log_grid(low: float, high: float, num: int) -> tuple[float, ...]:
    """``num`` log-spaced values in [low, high], rounded to 4 significant digits."""
    values = np.logspace(math.log10(low), math.log10(high), num)
    return tuple(float(f"{v:.4g}") for v in values)


#: the paper's learning-rate grid: 25 log-spaced values in [1e-4, 0.25] (4 significant digits)
PAPER_LR_GRID: tuple[float, ...] = _log_grid(1e-4, 0.25, 25)

#: keys of a sweep YAML file
_SWEEP_FILE_KEYS: tuple[str, ...] = (
    "presets",
    "seeds",
    "lr",
    "wd",
    "set",
    "select_lr",
    "out",
    "executor",
    "pack",
    "slurm",
)


def lr_grid(text: str) -> tuple[float, ...]:
    """Parse ``--lr-grid``: ``paper`` or ``LOW:HIGH:NUM`` (log-spaced, inclusive).

    Raises
    ------
    ConfigError
        If ``text`` is neither form, or LOW/HIGH/NUM are out of range.
    """
    if text.strip().lower() == "paper":
        return PAPER_LR_GRID
    parts = text.split(":")
    try:
        low, high, num = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError) as exc:
        raise ConfigError(
            f"--lr-grid {text!r} is not understood; use 'paper' (25 log-spaced values in "
            "[1e-4, 0.25]) or LOW:HIGH:NUM, e.g. 1e-3:0.1:5"
        ) from exc
    if not (0 < low <= high) or num < 1:
        raise ConfigError(f"--lr-grid {text!r}: need 0 < LOW <= HIGH and NUM >= 1")
    return _log_grid(low, high, num)


def value_token(value: float) -> str:
    """Shortest exact text of a float, as used in run names (``0.05``, ``0.0005``, ``1e-05``)."""
    return repr(float(value))


def preset_stem(preset: str) -> str:
    """Name part of a preset: the preset name, or the stem of a YAML path."""
    path = Path(preset)
    return path.stem if path.suffix in (".yaml", ".yml") else preset


def run_name(preset: str, seed: int, lr: float, weight_decay: float) -> str:
    """Deterministic directory name of one run: ``<preset>-s<seed>-lr<lr>-wd<wd>``.

    Examples
    --------
    >>> run_name("fashion-cnn-mse", 0, 0.05, 5e-4)
    'fashion-cnn-mse-s0-lr0.05-wd0.0005'
    """
    return f"{preset_stem(preset)}-s{seed}-lr{value_token(lr)}-wd{value_token(weight_decay)}"


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    Attributes
    ----------
    name : str
        Directory name (see :func:`run_name`).
    preset : str
        Preset name or absolute path of a YAML config.
    seed, lr, weight_decay : int, float, float
        The grid coordinates of the run.
    overrides : tuple of str
        Every ``key=value`` passed to ``ncmse train --set`` (the sweep's ``--set`` then the grid).
    run_dir : Path
        ``SWEEP_DIR/runs/<name>``.
    config : dict
        The resolved config (what ``config.yaml`` of the run will hold).
    """

    name: str
    preset: str
    seed: int
    lr: float
    weight_decay: float
    overrides: tuple[str, ...]
    run_dir: Path
    config: dict[str, Any] = field(compare=False, repr=False)

    def coordinates(self) -> dict[str, Any]:
        """JSON-ready description of the run (used in ``sweep.json``)."""
        return {
            "name": self.name,
            "preset": self.preset,
            "seed": self.seed,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "run_dir": str(self.run_dir),
            "overrides": list(self.overrides),
        }


@dataclass(frozen=True)
class SweepSpec:
    """What to run: presets × seeds × lrs × wds, with ``overrides`` applied to every run.

    ``None`` for ``seeds``, ``lrs`` or ``wds`` keeps the preset's own value.
    """

    presets: tuple[str, ...]
    seeds: tuple[int, ...] | None = None
    lrs: tuple[float, ...] | None = None
    wds: tuple[float, ...] | None = None
    overrides: tuple[str, ...] = ()
    select_lr: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in ``sweep.json``)."""
        return {
            "presets": list(self.presets),
            "seeds": None if self.seeds is None else list(self.seeds),
            "lrs": None if self.lrs is None else list(self.lrs),
            "wds": None if self.wds is None else list(self.wds),
            "overrides": list(self.overrides),
            "select_lr": self.select_lr,
        }


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    """Values in first-seen order without repeats."""
    return tuple(dict.fromkeys(values))


def _as_list(value: Any, key: str, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int, float)):
        return [value]
    raise ConfigError(f"{where}: {key!r} must be a value or a list, got {value!r}")


def _numbers(values: Iterable[Any], kind: type, key: str, where: str) -> tuple[Any, ...]:
    out = []
    for v in values:
        try:
            if isinstance(v, bool):
                raise TypeError(v)
            number = float(v) if kind is float else int(str(v))
        except (TypeError, ValueError) as exc:
            what = "a number" if kind is float else "an integer"
            raise ConfigError(f"{where}: {key!r} holds {v!r}, which is not {what}") from exc
        if kind is float and not math.isfinite(number):
            raise ConfigError(f"{where}: {key!r} holds {v!r}; use finite values")
        out.append(number)
    return _unique(out)


def _set_items(value: Any, where: str) -> list[str]:
    """``set:`` of a sweep file: a list of ``key=value`` or a mapping -> ``key=value`` strings."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(
        f"{where}: 'set' must be a mapping (epochs: 20) or a list of 'key=value' strings, "
        f"got {value!r}"
    )


def _file_preset(preset: str, base: Path) -> str:
    """A preset of a sweep file: YAML paths are taken relative to the file's folder."""
    path = Path(preset).expanduser()
    if path.suffix in (".yaml", ".yml") and not path.is_absolute():
        return str((base / path).resolve())
    return preset


def load_sweep_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a sweep YAML file into the keyword arguments of :class:`SweepSpec` plus extras.

    Returns
    -------
    dict
        ``presets``, ``seeds``, ``lrs``, ``wds``, ``overrides``, ``select_lr`` (only the keys the
        file sets) and, when present, ``out``, ``executor`` and ``slurm`` (a mapping).

    Raises
    ------
    ConfigError
        If the file is missing, is not a mapping, or has an unknown key or a bad value.
    """
    p = Path(path).expanduser()
    where = f"sweep file {str(p)!r}"
    if not p.is_file():
        raise ConfigError(f"{where} does not exist; pass the path of a sweep YAML file")
    data = read_yaml_mapping(p, where, f"the keys {', '.join(_SWEEP_FILE_KEYS)}")
    unknown = sorted(set(data) - set(_SWEEP_FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(_SWEEP_FILE_KEYS)}"
        )
    out: dict[str, Any] = {}
    if "presets" in data:
        out["presets"] = tuple(
            _file_preset(str(v), p.parent) for v in _as_list(data["presets"], "presets", where)
        )
    if "seeds" in data:
        out["seeds"] = _numbers(_as_list(data["seeds"], "seeds", where), int, "seeds", where)
    if "lr" in data:
        lr = data["lr"]
        if isinstance(lr, str) and not _is_number(lr):
            out["lrs"] = lr_grid(lr)
            out["select_lr"] = True
        else:
            out["lrs"] = _numbers(_as_list(lr, "lr", where), float, "lr", where)
    if "wd" in data:
        out["wds"] = _numbers(_as_list(data["wd"], "wd", where), float, "wd", where)
    if "set" in data:
        out["overrides"] = tuple(_set_items(data["set"], where))
    if "select_lr" in data:
        out["select_lr"] = bool(data["select_lr"])
    for key in ("out", "executor"):
        if key in data:
            out[key] = str(data[key])
    if "pack" in data:
        pack = data["pack"]
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
            raise ConfigError(f"{where}: 'pack' must be a positive integer, got {pack!r}")
        out["pack"] = pack
    if "slurm" in data:
        if not isinstance(data["slurm"], dict):
            raise ConfigError(f"{where}: 'slurm' must be a mapping (partition: gpu, time: 60)")
        out["slurm"] = dict(data["slurm"])
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_AXIS_KEYS = {"seed": "seeds", "lr": "lrs", "weight_decay": "wds"}


def _check_overrides(spec: SweepSpec) -> None:
    """Refuse ``--set`` of a key that is also a grid axis (which one would win is unclear)."""
    keys = parse_overrides(spec.overrides)
    for key, axis in _AXIS_KEYS.items():
        if key in keys and getattr(spec, axis) is not None:
            flag = {"seeds": "--seeds", "lrs": "--lr/--lr-grid", "wds": "--wd"}[axis]
            raise ConfigError(
                f"--set {key}=... conflicts with {flag}; give {key} either as a grid axis or "
                "with --set, not both"
            )
    if "name" in keys:
        raise ConfigError(
            "--set name=... is not allowed in a sweep: the name identifies the preset of each "
            "run (runs are named <preset>-s<seed>-lr<lr>-wd<wd>); remove it"
        )


def _absolute_preset(preset: str) -> str:
    """Presets given as YAML paths become absolute, so that jobs may start elsewhere."""
    path = Path(preset).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        load_yaml_config(path)  # raises ConfigError with a clear message when missing
        return str(path.resolve())
    return preset


def _grid_overrides(seed: int, lr: float, wd: float) -> tuple[str, ...]:
    return (f"seed={seed}", f"lr={value_token(lr)}", f"weight_decay={value_token(wd)}")


def _runs_of_preset(
    preset: str, spec: SweepSpec, sweep_dir: Path
) -> dict[tuple[int, float, float], RunSpec]:
    """Every run of one preset, keyed by (seed, lr, wd)."""
    base = resolve_config(preset, spec.overrides)
    if spec.select_lr and not base.measure_test:
        raise ConfigError(
            f"learning-rate selection needs the final test error, but preset {preset!r} has "
            "measure_test=false; add --set measure_test=true"
        )
    seeds = spec.seeds if spec.seeds is not None else (base.seed,)
    lrs = spec.lrs if spec.lrs is not None else (base.lr,)
    wds = spec.wds if spec.wds is not None else (base.weight_decay,)
    runs = {}
    for seed in seeds:
        for wd in wds:
            for lr in lrs:
                overrides = tuple(spec.overrides) + _grid_overrides(seed, lr, wd)
                cfg = resolve_config(preset, overrides)
                name = run_name(preset, seed, lr, wd)
                runs[(seed, lr, wd)] = RunSpec(
                    name=name,
                    preset=preset,
                    seed=seed,
                    lr=lr,
                    weight_decay=wd,
                    overrides=overrides,
                    run_dir=sweep_dir / "runs" / name,
                    config=cfg.to_dict(),
                )
    return runs


def expand(spec: SweepSpec, sweep_dir: str | os.PathLike[str]) -> list[RunSpec]:
    """Every run of the sweep, validated, in execution order.

    The order is seed-major (all presets, weight decays and learning rates of the first seed,
    then the next seed), so an interrupted sweep has covered every configuration once first.

    Raises
    ------
    ConfigError
        For an empty preset list, a ``--set`` that clashes with a grid axis, an invalid value of
        any run, or two presets whose names coincide.
    """
    if not spec.presets:
        raise ConfigError("no preset given; pass --preset NAME (see `ncmse train --help`)")
    _check_overrides(spec)
    root = Path(sweep_dir).expanduser().resolve()
    presets = _unique(_absolute_preset(p) for p in spec.presets)
    stems: dict[str, str] = {}
    for preset in presets:
        stem = preset_stem(preset)
        if stem in stems:
            raise ConfigError(
                f"presets {stems[stem]!r} and {preset!r} would share the run name {stem!r}; "
                "rename one of the YAML files"
            )
        stems[stem] = preset
    spec = replace(spec, presets=presets)
    per_preset = [_runs_of_preset(p, spec, root) for p in presets]
    seeds = _unique(seed for runs in per_preset for (seed, _, _) in runs)
    return [
        run for seed in seeds for runs in per_preset for (s, _, _), run in runs.items() if s == seed
    ]
