"""Run configuration: defaults ← YAML preset/file ← ``--set key=value`` overrides.

Every key, its type and its valid values live in :class:`Config`; anything else is rejected with a
:class:`~ncmse.errors.ConfigError` that names the key and lists the valid keys or choices.
Presets are YAML files shipped in ``ncmse/configs``; ``--config`` takes a preset name or a path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ncmse.errors import ConfigError
from ncmse.train.data import DATASETS
from ncmse.train.losses import LOSSES, MSE_REDUCTIONS
from ncmse.train.models import MODELS, check_model_kwargs
from ncmse.train.step import PRECISIONS
from ncmse.train.userref import check_reference

__all__ = [
    "is_run_config",
    "read_yaml_mapping",
    "Config",
    "PRESET_DIR",
    "DEFAULT_PRESET",
    "list_presets",
    "preset_description",
    "load_yaml_config",
    "parse_overrides",
    "resolve_config",
    "config_from_dict",
    "valid_keys",
]

#: directory of the shipped presets
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
#: preset used by ``ncmse train`` without ``--config``
DEFAULT_PRESET = "digits-mlp-mse"


@dataclass
class Config:
    """Every setting of a training run (the resolved config of a run directory).

    Defaults reproduce the embedded demo: digits, MLP, MSE loss, reaching the terminal phase in
    about a minute on two CPU cores. See ``docs`` or ``ncmse train --help`` for the presets.
    ``freeze_features: true`` trains only the classifier (the final ``nn.Linear``) on the
    features of the network as initialised (:func:`ncmse.train.models.freeze_features`).
    """

    name: str = "digits-mlp-mse"
    # data
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    per_class: int | None = None
    test_per_class: int | None = None
    # model
    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: train only the final nn.Linear; every other layer (BatchNorm statistics included) stays
    #: as initialised and in eval mode: the "no feature learning" baseline
    freeze_features: bool = False
    # loss
    loss: str = "mse"
    mse_reduction: str = "mean"
    rescale_k: float = 1.0
    rescale_m: float = 1.0
    lam: float | None = None
    # optimisation (SPEC §6)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    lr_milestones: list[float] = field(default_factory=lambda: [1 / 3, 2 / 3])
    lr_gamma: float = 0.1
    # measurements
    measure_points: int = 50
    measure_epochs: list[int] | None = None
    measure_test: bool = True
    measure_batch_size: int = 1024
    memory_budget_bytes: int | None = None
    # run control
    seed: int = 0
    device: str = "auto"
    deterministic: bool = True
    num_threads: int | None = None
    checkpoint_every: int = 1
    tensorboard: str = "auto"
    quiet: bool = False
    report: bool = True
    dist_backend: str = "auto"
    # speed (CUDA; see docs/PERFORMANCE.md and ncmse.train.step)
    precision: str = "tf32"
    channels_last: bool = False
    cuda_graph: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of every key (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)


def _dataset_choices() -> tuple[str, ...]:
    return tuple(DATASETS)


def _model_choices() -> tuple[str, ...]:
    return tuple(MODELS)


#: key -> callable returning the valid choices (evaluated lazily)
_CHOICES: dict[str, typing.Callable[[], tuple[str, ...]]] = {
    "dataset": _dataset_choices,
    "model": _model_choices,
    "loss": lambda: LOSSES,
    "mse_reduction": lambda: MSE_REDUCTIONS,
    "device": lambda: ("auto", "cpu", "cuda"),
    "tensorboard": lambda: ("auto", "true", "false"),
    "dist_backend": lambda: ("auto", "gloo", "nccl"),
    "precision": lambda: PRECISIONS,
}

#: the largest value of a 64-bit signed integer: every integer key must fit one (torch, numpy)
_MAX_INT64 = 2**63 - 1
#: torch.set_num_threads takes a C int
_MAX_C_INT = 2**31 - 1
#: longer runs cannot finish; the log-spaced measurement schedule is exact up to here
_MAX_EPOCHS = 10**9

#: key -> (predicate, description of the valid range)
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "per_class": (lambda v: v > 0, "a positive integer or null"),
    "test_per_class": (lambda v: v > 0, "a positive integer or null"),
    "rescale_k": (lambda v: v > 0, "> 0"),
    "rescale_m": (lambda v: v > 0, "> 0"),
    "lam": (lambda v: v >= 0, ">= 0 or null (derived from the loss and weight decay)"),
    "epochs": (lambda v: 1 <= v <= _MAX_EPOCHS, f">= 1 (and at most {_MAX_EPOCHS:.0e})"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "lr_milestones": (lambda v: all(0 < f < 1 for f in v), "fractions of the epochs in (0, 1)"),
    "lr_gamma": (lambda v: v > 0, "> 0"),
    "measure_points": (lambda v: v >= 1, ">= 1"),
    "measure_epochs": (lambda v: len(v) > 0 and all(e >= 0 for e in v), "non-empty, epochs >= 0"),
    "measure_batch_size": (lambda v: v >= 1, ">= 1"),
    "memory_budget_bytes": (lambda v: v > 0, "> 0 or null"),
    "num_threads": (lambda v: 1 <= v <= _MAX_C_INT, f"in [1, {_MAX_C_INT}] or null"),
    "seed": (lambda v: 0 <= v <= _MAX_INT64, "in [0, 2**63 - 1] (what torch and numpy seed)"),
    "checkpoint_every": (lambda v: v >= 0, ">= 0 (0: only at the end)"),
}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def valid_keys() -> list[str]:
    """Names of every config key, in declaration order."""
    return [f.name for f in dataclasses.fields(Config)]


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown config key {key!r} in {where}.{hint} Valid keys: {', '.join(valid_keys())}"
    )


def _coerce_scalar(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` to the scalar type ``typ`` or raise."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, bool):  # YAML turns true/false into bools; keep the word
            return str(value).lower()
        if isinstance(value, (str, int, float)):
            return str(value)
    elif typ is Any:
        return value
    raise ConfigError(
        f"config key {key!r} must be of type {getattr(typ, '__name__', typ)}, got {value!r}"
    )


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` to the annotated type ``typ`` (supports ``X | None``, lists, dicts)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        return _coerce(key, value, args[0])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        (item,) = typing.get_args(typ)
        return [_coerce(key, v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(key, value, typ)


def _validate_value(key: str, value: Any) -> None:
    if value is None:
        return
    if key in ("dataset", "model") and ":" in str(value):  # user code, "module:function"
        check_reference(key, value)
        return
    if key in _CHOICES:
        choices = _CHOICES[key]()
        if value not in choices:
            raise ConfigError(
                f"invalid value {value!r} for config key {key!r}; choose one of {list(choices)}"
            )
    if key in _RANGES:
        ok, text = _RANGES[key]
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be finite, got {value!r}")
        if not ok(value):
            raise ConfigError(f"invalid value {value!r} for config key {key!r}: must be {text}")
    ints = value if isinstance(value, list) else [value]
    if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_INT64 for v in ints):
        raise ConfigError(
            f"invalid value {value!r} for config key {key!r}: integers must fit 64 bits "
            "(|value| <= 2**63 - 1)"
        )


def config_from_dict(data: dict[str, Any], *, where: str = "config") -> Config:
    """Build and validate a :class:`Config` from a (possibly partial) mapping.

    Parameters
    ----------
    data : dict
        Keys of :class:`Config`; missing keys take their defaults.
    where : str
        Where the mapping came from (used in error messages).

    Raises
    ------
    ConfigError
        For an unknown key, a value of the wrong type or outside its valid choices/range.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} must be a YAML mapping of key: value, got {type(data).__name__}"
        )
    hints = _field_types()
    values = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown_key(str(key), where)
        values[key] = _coerce(key, value, hints[key])
        _validate_value(key, values[key])
    cfg = Config(**values)
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    if cfg.model_kwargs and ":" not in cfg.model:  # a user factory checks its own options
        check_model_kwargs(cfg.model, cfg.model_kwargs)
    if cfg.measure_epochs is not None and max(cfg.measure_epochs) > cfg.epochs:
        raise ConfigError(
            f"measure_epochs contains {max(cfg.measure_epochs)} > epochs={cfg.epochs}; "
            "drop it or raise epochs"
        )
    if cfg.loss != "rescaled_mse" and (cfg.rescale_k != 1.0 or cfg.rescale_m != 1.0):
        raise ConfigError(
            f"rescale_k/rescale_m only apply to loss='rescaled_mse' (loss is {cfg.loss!r}); "
            "set --set loss=rescaled_mse or leave them at 1"
        )


def list_presets() -> list[str]:
    """Names of the shipped presets (``ncmse/configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_description(name: str) -> str:
    """What a shipped preset is: the first sentence of its YAML file's leading comment block
    ("" when it has none), as ``ncmse train --list-presets`` prints it."""
    lines = []
    for line in (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    end = re.search(r"\.(\s|$)", text)
    return text[: end.start() + 1] if end else text


def _preset_path(name_or_path: str | os.PathLike[str]) -> Path:
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {text!r} does not exist; pass a preset name or a path")
        return path
    preset = PRESET_DIR / f"{text}.yaml"
    if not preset.is_file():
        close = difflib.get_close_matches(text, list_presets(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown preset {text!r}.{hint} Available presets: {', '.join(list_presets())}; "
            "or pass a path to a .yaml file"
        )
    return preset


def read_yaml_mapping(path: Path, where: str, expected: str = "key: value") -> dict[str, Any]:
    """A YAML file that must hold a mapping; ``where`` names it in the error messages."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"{where} is not valid YAML ({text}); fix the file") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of {expected}")
    return data


def load_yaml_config(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a preset (by name) or a YAML file into a raw mapping (not yet validated)."""
    path = _preset_path(name_or_path)
    return read_yaml_mapping(path, f"config file {str(path)!r}")


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars, ``a.b=v`` sets a key of a mapping.

    Raises
    ------
    ConfigError
        For an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set epochs=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not a YAML scalar: {exc}") from exc
        if "." in key:
            top, sub = key.split(".", 1)
            out.setdefault(top, {})
            if not isinstance(out[top], dict):
                raise ConfigError(f"--set {item!r}: {top!r} was already set to a non-mapping")
            out[top][sub] = value
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if key == "model_kwargs" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def resolve_config(
    config: str | os.PathLike[str] | None = None,
    overrides: typing.Iterable[str] = (),
) -> Config:
    """Defaults ← preset or YAML file ← ``key=value`` overrides, validated.

    Parameters
    ----------
    config : str, path or None
        Preset name (see :func:`list_presets`) or path to a YAML file; ``None`` uses
        :data:`DEFAULT_PRESET`.
    overrides : iterable of str
        ``key=value`` items (``--set``), applied last.
    """
    source = DEFAULT_PRESET if config is None else config
    data = load_yaml_config(source)
    for key in data:
        if key not in _field_types():
            raise _unknown_key(str(key), f"config file {str(source)!r}")
    parsed = parse_overrides(overrides)
    for key in parsed:
        if key not in _field_types():
            raise _unknown_key(key, "--set")
    if "model" in parsed and parsed["model"] != data.get("model", Config.model):
        # options of the preset's model rarely fit another model: start from none
        data = {k: v for k, v in data.items() if k != "model_kwargs"}
    return config_from_dict(_merge(data, parsed), where=f"config {str(source)!r} with --set")


def is_run_config(path: str | os.PathLike[str]) -> bool:
    """Whether the file ``path`` holds a valid training config (a run directory's
    ``config.yaml``; :func:`ncmse.rundir.guard.is_ncmse_run` takes it as evidence of a run)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        config_from_dict(read_yaml_mapping(path, "config.yaml"))
    except Exception:
        return False
    return True
