"""ncmse — measure, decompose and predict Neural Collapse under MSE loss.

Implements Han, Papyan & Donoho, "Neural Collapse Under MSE Loss: Proximity to and Dynamics on the
Central Path" (ICLR 2022). Definitions: SPEC.md. Quick start::

    import ncmse
    result = ncmse.measure(model, train_loader, lam=ncmse.lambda_for(weight_decay=5e-4,
                                                                   num_classes=10))
    print(result.nc1, result.loss_perp / result.loss)

The names below are imported on first use, so ``import ncmse`` (and ``ncmse --help``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "measure": "ncmse.api",
    "measure_features": "ncmse.api",
    "measure_stream": "ncmse.api",
    "measure_layers": "ncmse.layers",
    "NCResult": "ncmse.result",
    "ClassStats": "ncmse.stats",
    "merge": "ncmse.stats",
    "decompose": "ncmse.lstsq",
    "ls_classifier": "ncmse.lstsq",
    "lambda_for": "ncmse.lstsq",
    "NCMSEError": "ncmse.errors",
    "NCMSEWarning": "ncmse.errors",
}

__all__ = [
    "measure",
    "measure_features",
    "measure_stream",
    "measure_layers",
    "NCResult",
    "ClassStats",
    "merge",
    "decompose",
    "ls_classifier",
    "lambda_for",
    "NCMSEError",
    "NCMSEWarning",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover  (names for type checkers and IDEs)
    from ncmse.api import measure, measure_features, measure_stream
    from ncmse.errors import NCMSEError, NCMSEWarning
    from ncmse.layers import measure_layers
    from ncmse.lstsq import decompose, lambda_for, ls_classifier
    from ncmse.result import NCResult
    from ncmse.stats import ClassStats, merge


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ncmse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
