"""Your own network and data in ``ncmse train``: config values ``"package.module:attribute"``.

``model: "mypkg.nets:build"`` — a factory with the signature of
:func:`ncmse.train.models.build_model` less the name::

    def build(*, num_classes: int, in_channels: int, image_size: int, **model_kwargs) -> nn.Module

returning a network that maps ``[B, in_channels, image_size, image_size]`` to ``[B, num_classes]``
and whose classifier (the ``nn.Linear`` whose output is the network's output) is its last
``nn.Linear`` in ``model.modules()`` (checked on a batch before training). ``model_kwargs`` of the
config are passed to it.

``dataset: "mypkg.data:load"`` — a loader with the signature of
:func:`ncmse.train.data.load_dataset` less the name::

    def load(*, data_dir, download: bool, per_class, test_per_class, seed: int) -> DatasetBundle

returning an :class:`ncmse.train.data.DatasetBundle` (standardised float32 images ``[N, C, H, W]``,
int64 labels in ``[0, num_classes)``).

The module is imported as Python imports any module (it must be on ``sys.path``, e.g. through
``PYTHONPATH``); a failure is a :class:`~ncmse.errors.ConfigError` naming the import.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ncmse.collapse.frontend import final_linear
from ncmse.errors import ConfigError
from ncmse.train.data import DatasetBundle
from ncmse.train.models import classifier_of

__all__ = ["is_reference", "check_reference", "resolve", "load_user_dataset", "build_user_model"]

_REFERENCE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_reference(value: Any) -> bool:
    """Whether a config value names user code (``"module:attribute"``) rather than a built-in."""
    return isinstance(value, str) and ":" in value


def check_reference(key: str, value: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` reads ``package.module:attribute``."""
    if not _REFERENCE.match(value):
        raise ConfigError(
            f"config key {key!r} = {value!r} is neither a built-in name nor "
            "'package.module:attribute' (a dotted module path, one colon, a function name)"
        )


def resolve(key: str, value: str) -> Callable[..., Any]:
    """The callable that ``value`` (``"package.module:attribute"``) names.

    Raises
    ------
    ConfigError
        The module cannot be imported (not on ``sys.path``, or an error while importing it), has
        no such attribute, or the attribute is not callable; one line naming the import.
    """
    check_reference(key, value)
    module_name, attribute = value.split(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any failure of user code at import time is the config's problem
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        raise ConfigError(
            f"{key}: {value!r}: importing {module_name!r} failed ({reason}); put the package on "
            "PYTHONPATH or install it"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"{key}: {value!r}: module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{key}: {value!r} is a {type(target).__name__}, not a function")
    return target


def load_user_dataset(cfg: Any) -> Any:
    """Call the config's ``dataset`` loader with the data keys; check it returns a bundle."""
    loader = resolve("dataset", cfg.dataset)
    bundle = loader(
        data_dir=cfg.data_dir,
        download=cfg.download,
        per_class=cfg.per_class,
        test_per_class=cfg.test_per_class,
        seed=cfg.seed,
    )
    if not isinstance(bundle, DatasetBundle):
        raise ConfigError(
            f"dataset: {cfg.dataset!r} returned a {type(bundle).__name__}; it must return an "
            "ncmse.train.data.DatasetBundle"
        )
    return bundle


def build_user_model(cfg: Any, bundle: Any) -> Any:
    """Call the config's ``model`` factory and check that its last ``nn.Linear`` is the layer
    producing its output on a few training samples (the layer every measurement hooks)."""

    factory = resolve("model", cfg.model)
    model = factory(
        num_classes=bundle.num_classes,
        in_channels=bundle.in_channels,
        image_size=bundle.image_size,
        **cfg.model_kwargs,
    )
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model: {cfg.model!r} returned a {type(model).__name__}; it must return an nn.Module"
        )
    last = classifier_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            produces = final_linear(model, bundle.train_x[:2].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    if produces is not last:
        raise ConfigError(
            f"model: {cfg.model!r}: the nn.Linear producing the output is not the last nn.Linear "
            "in model.modules(); define the classifier last (ncmse measures the input of the last "
            "nn.Linear)"
        )
    return model
