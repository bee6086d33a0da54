"""Neural-collapse callbacks for training frameworks (each imported on demand).

* :mod:`ncmse.integrations.lightning` — ``NeuralCollapseCallback`` for Lightning
  (``pip install lightning``)
* :mod:`ncmse.integrations.transformers` — ``NeuralCollapseCallback`` for the Hugging Face
  ``Trainer`` (``pip install transformers``)

Both call :func:`ncmse.measure` on a loader and log :meth:`ncmse.NCResult.to_log_dict` through the
framework's own logging. Importing this package imports neither framework.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ncmse.errors import InputError

__all__ = ["log_values", "resolve_layer"]


def resolve_layer(model: Any, layer: Any) -> Any:
    """The ``nn.Linear`` named by ``layer``: the module itself, a dotted submodule name of
    ``model`` (``"lm_head"``, ``"model.fc"``), or None (:func:`ncmse.measure` then finds the final
    layer by execution)."""

    if layer is None or isinstance(layer, nn.Linear):
        return layer
    if isinstance(layer, str):
        try:
            found = model.get_submodule(layer)
        except AttributeError as exc:
            raise InputError(
                f"{type(model).__name__} has no submodule {layer!r}; pass layer=<the name of "
                "the final nn.Linear> (see model.named_modules())"
            ) from exc
        if isinstance(found, nn.Linear):
            return found
        layer = found
    raise InputError(
        f"layer must be an nn.Linear, its name or None, got {type(layer).__name__}; the features "
        "measured are that layer's input"
    )


def log_values(result: Any, prefix: str) -> dict[str, float]:
    """``result.to_log_dict()`` with ``prefix`` before every name."""
    return {f"{prefix}{name}": value for name, value in result.to_log_dict().items()}
