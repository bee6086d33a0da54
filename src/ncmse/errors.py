"""One exception family for every input ncmse rejects.

Each message says which input was wrong and how to fix it, in the manner of einops.
"""

from __future__ import annotations

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
