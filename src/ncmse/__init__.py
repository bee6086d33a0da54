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

from typing import TYPE_CHECKING

from ncmse.lazy import lazy_names

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "measure": "ncmse.collapse.api",
    "measure_features": "ncmse.collapse.api",
    "measure_stream": "ncmse.collapse.api",
    "measure_layers": "ncmse.collapse.layers",
    "NCResult": "ncmse.collapse.result",
    "ClassStats": "ncmse.collapse.stats",
    "merge": "ncmse.collapse.stats",
    "decompose": "ncmse.collapse.lstsq",
    "ls_classifier": "ncmse.collapse.lstsq",
    "lambda_for": "ncmse.collapse.lstsq",
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
    from ncmse.collapse.api import measure, measure_features, measure_stream
    from ncmse.collapse.layers import measure_layers
    from ncmse.collapse.lstsq import decompose, lambda_for, ls_classifier
    from ncmse.collapse.result import NCResult
    from ncmse.collapse.stats import ClassStats, merge
    from ncmse.errors import NCMSEError, NCMSEWarning


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
