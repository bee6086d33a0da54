"""One number format for tables and consoles: three significant digits.

A value is printed with 3 significant digits (``0.0347``, ``1.23e+03``); a mean with its spread is
printed with both rounded to the same decimal place, the last significant digit of the mean
(``0.0347 ± 0.0005``, not ``0.0347 ± 0.000534``), in a shared power of ten outside
``[1e-3, 1e4)`` (``(3.47 ± 0.05)e-05``). Shared by the report's tables and the sweep's console
(peers that never import each other); it imports nothing heavy.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SIGNIFICANT", "plus_minus", "sig3"]

#: Significant digits of every printed number.
SIGNIFICANT = 3
_FIXED_RANGE = (1e-3, 1e4)


def sig3(value: Any) -> str:
    """``value`` with 3 significant digits; integers exactly, NaN/None as an em dash.

    Parameters
    ----------
    value : float, int or None

    Returns
    -------
    str
        E.g. ``0.0347``, ``12.3``, ``99.0``, ``100``, ``1.23e+05``; ``"—"`` for None or NaN.
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "—"
    if value == 0.0:
        return "0"
    # "#" keeps trailing zeros (99.0, 0.500: three digits shown); a bare trailing point goes
    text = f"{value:#.{SIGNIFICANT}g}"
    return text[:-1] if text.endswith(".") else text


def _decimals(mean: float) -> int:
    """Decimal place of the last of the 3 significant digits of ``mean`` (negative: tens…)."""
    exponent = math.floor(math.log10(abs(float(f"{mean:.{SIGNIFICANT}g}"))))
    return SIGNIFICANT - 1 - exponent


def plus_minus(mean: float, spread: float, *, scale: float = 1.0) -> str:
    """``mean ± spread`` with the mean to 3 significant digits and the spread to the same place.

    Parameters
    ----------
    mean, spread : float
        The central value and its spread (e.g. a standard deviation); both multiplied by
        ``scale`` first (100 for percent).
    scale : float
        Factor applied to both.

    Returns
    -------
    str
        ``"0.0347 ± 0.0005"``; ``"0.0347 ± <0.0001"`` when the spread rounds to zero at that
        place; ``"(3.47 ± 0.05)e-05"`` outside [1e-3, 1e4); the mean alone when the spread is NaN;
        ``"—"`` when the mean is NaN.
    """
    mean, spread = scale * float(mean), scale * float(spread)
    if math.isnan(mean):
        return "—"
    if math.isnan(spread):
        return sig3(mean)
    if mean == 0.0 or math.isinf(mean):
        return f"{sig3(mean)} ± {sig3(spread)}"
    places = _decimals(mean)
    magnitude = abs(float(f"{mean:.{SIGNIFICANT}g}"))
    if _FIXED_RANGE[0] <= magnitude < _FIXED_RANGE[1]:
        return f"{_fixed(mean, places)} ± {_spread(spread, places)}"
    exponent = SIGNIFICANT - 1 - places
    inner = plus_minus(mean / 10.0**exponent, spread / 10.0**exponent)
    return f"({inner})e{exponent:+03d}"


def _fixed(value: float, places: int) -> str:
    rounded = round(value, places)
    return f"{rounded:.{max(places, 0)}f}"


def _spread(spread: float, places: int) -> str:
    if round(abs(spread), places) == 0.0 and spread != 0.0:
        return "<" + _fixed(10.0**-places, places)
    return _fixed(abs(spread), places)
