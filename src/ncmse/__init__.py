"""ncmse — measure, decompose and predict Neural Collapse under MSE loss.

Implements Han, Papyan & Donoho, "Neural Collapse Under MSE Loss: Proximity to and Dynamics on the
Central Path" (ICLR 2022). Definitions: SPEC.md. Quick start::

    import ncmse
    result = ncmse.measure(model, train_loader, lam=ncmse.lambda_for(weight_decay=5e-4,
                                                                   num_classes=10))
    print(result.nc1, result.loss_perp / result.loss)
"""

from ncmse.api import measure, measure_features, measure_stream
from ncmse.errors import NCMSEError, NCMSEWarning
from ncmse.lstsq import decompose, lambda_for, ls_classifier
from ncmse.result import NCResult
from ncmse.stats import ClassStats, merge

__version__ = "0.1.0"

__all__ = [
    "measure",
    "measure_features",
    "measure_stream",
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
