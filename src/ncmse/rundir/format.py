"""The one rule for the cells of a run directory's files: how numbers, NaN/±∞, booleans and the
``snr`` list are written and read. Every module that parses or formats such a cell (the run
directory's writer and reader, claims, the central-path fit, figures, sweep, report) goes through
this module.

Non-finite numbers
------------------
* **CSV** cells hold Python's ``repr`` of a float: ``nan``, ``inf``, ``-inf``; an empty cell means
  *absent* (the column does not apply to that row).
* **JSON** (``summary.json``, ``metrics.jsonl``, ``ncmse measure --json``, sweep manifests) is
  strict JSON: NaN is written as ``null`` and ±∞ as the strings ``"inf"`` / ``"-inf"``, so an
  infinite value (e.g. ω = +∞ at exact collapse, SPEC §2) stays distinguishable from an undefined
  one.
* Readers accept every encoding older versions wrote: ``""``/``null``/``"nan"`` → NaN,
  ``"inf"``/``"Infinity"`` → ∞ and ±1e308 (the old clamp) → ±∞.

Booleans
--------
* A run's own files (``metrics.csv``) write ``True``/``False`` (:func:`csv_cell`); the tables
  derived from runs (``claims.csv``, ``accuracy_gaps.csv``, the verdict columns of a sweep's
  ``results.csv``) write ``true``/``false`` (:func:`table_cell`). Readers take both, and 0/1
  (:func:`parse_cell`, :func:`flag`).

>>> to_json({"omega": float("inf"), "nc1": float("nan"), "n": 3})
'{"omega": "inf", "nc1": null, "n": 3}'
>>> from_json({"omega": "inf", "old": -1e308, "nc1": None})
{'omega': inf, 'old': -inf, 'nc1': None}
>>> csv_cell(float("-inf")), csv_cell(None), csv_cell(0.1)
('-inf', '', '0.1')
>>> parse_cell("1e308"), parse_cell(""), parse_cell("True"), parse_cell("cache")
(inf, nan, 1.0, 'cache')
>>> number("-1e308"), number("cache"), number(None)
(-inf, nan, nan)
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncmse.collapse.result import flatten_row

__all__ = [
    "OLD_INF",
    "TEXT_COLUMNS",
    "all_bool",
    "csv_cell",
    "encode",
    "flag",
    "from_json",
    "number",
    "parse_cell",
    "parse_json",
    "plain",
    "rows_to_csv",
    "snr_columns",
    "table_cell",
    "text_cell",
    "to_json",
]


#: magnitude at or above which an old file's number is read as ±∞ (old writers clamped to 1e308)
OLD_INF = 1e308


_INF_TEXT = {
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
    "nan": math.nan,
}


_TRUE = {"true", "True", "TRUE"}


_FALSE = {"false", "False", "FALSE"}


_SNR_RE = re.compile(r"^(test_)?snr_(\d+)$")


#: metrics columns whose values are text whatever their cells hold (also as ``test_<name>``):
#: the string-valued keys of ``NCResult.to_dict()`` and the UFM's ``flow``; an all-empty
#: ``flags`` column (nothing flagged) must read back as "" cells, not as NaN
TEXT_COLUMNS = frozenset({"nc4_method", "flags", "flow"})


def plain(value: Any) -> Any:
    """NumPy scalars and arrays as Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def encode(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` under the module's rule (NaN → null, ±∞ → "inf"/"-inf")."""
    return json.dumps(encode(value), indent=indent, allow_nan=False, ensure_ascii=False)


def from_json(value: Any) -> Any:
    """Inverse of the JSON rule, recursively: "inf"/"-inf"/"nan" strings and ±1e308 → floats.

    ``null`` stays ``None`` (a consumer of a numeric field reads it as NaN).
    """
    if isinstance(value, str):
        return _INF_TEXT.get(value.strip().lower(), value)
    if isinstance(value, float) and abs(value) >= OLD_INF:
        return math.copysign(math.inf, value)
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def parse_json(text: str | bytes) -> Any:
    """JSON text decoded under the rule (:func:`from_json` of :func:`json.loads`).

    >>> parse_json('{"omega": "inf", "nc1": null, "old": 1e308}')
    {'omega': inf, 'nc1': None, 'old': inf}

    Raises
    ------
    ValueError
        If ``text`` is not JSON.
    """
    return from_json(json.loads(text))


def csv_cell(value: Any) -> Any:
    """One CSV cell of a run file: floats in full precision (``repr``: ``nan``/``inf``), ``None``
    as empty, booleans as Python writes them (``True``/``False``)."""
    value = plain(value)
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def table_cell(value: Any) -> Any:
    """One CSV cell of a table derived from runs (``claims.csv``, ``accuracy_gaps.csv``, a
    sweep's ``results.csv`` verdict columns): :func:`csv_cell`, but booleans in lower case.

    >>> table_cell(True), table_cell(None), table_cell(float("-inf")), table_cell("holds")
    ('true', '', '-inf', 'holds')
    """
    value = plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return csv_cell(value)


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``rows`` (``snr`` lists expanded to ``snr_j``); columns in first-seen order."""
    flat = [flatten_row(dict(r)) for r in rows]
    if columns is None:
        columns = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for r in flat:
        writer.writerow({k: csv_cell(r.get(k)) for k in columns})
    return buf.getvalue()


def snr_columns(names: Iterable[str], *, test: bool = False) -> list[str]:
    """The ``snr_j`` (or ``test_snr_j``) column names among ``names``, ordered by j.

    >>> snr_columns(["snr_10", "snr_2", "test_snr_1", "nc1"])
    ['snr_2', 'snr_10']
    """
    found = []
    for name in names:
        match = _SNR_RE.match(name)
        if match and bool(match.group(1)) == test:
            found.append((int(match.group(2)), name))
    return [name for _, name in sorted(found)]


def parse_cell(cell: Any) -> float | str:
    """A cell as float (booleans as 0/1, empty/null as NaN, old ±1e308 as ±∞) or its text."""
    if cell is None:
        return math.nan
    if isinstance(cell, (bool, int, float)):
        value = float(cell)
        return math.copysign(math.inf, value) if abs(value) >= OLD_INF else value
    text = str(cell).strip()
    if text == "":
        return math.nan
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    try:
        return parse_cell(float(text))
    except ValueError:
        return text


def text_cell(cell: Any) -> str:
    """A cell of a text column: its text, "" for an empty or null cell."""
    return "" if cell is None else str(cell).strip()


def all_bool(cells: Iterable[Any]) -> bool:
    """Whether every non-empty cell is a boolean (``True``/``False`` text or a bool)."""
    seen = False
    for cell in cells:
        if cell is None or cell == "":
            continue
        if not (isinstance(cell, bool) or str(cell).strip() in _TRUE | _FALSE):
            return False
        seen = True
    return seen


def flag(cell: Any) -> bool | None:
    """A boolean cell under the rule of :func:`parse_cell` (``True``/``False`` text, a bool, a
    number: nonzero is true); None when the cell is empty, NaN or other text.

    >>> flag("True"), flag("false"), flag(0.0), flag(""), flag("maybe")
    (True, False, False, None, None)
    """
    value = parse_cell(cell)
    if not isinstance(value, float) or math.isnan(value):
        return None
    return value != 0.0


def number(cell: Any) -> float:
    """A cell as a number under the one rule (:func:`parse_cell`): NaN for text that is not one.

    NumPy scalars are taken at their value (a float32 cell is not rounded through its text).
    """
    if isinstance(cell, np.number):
        cell = float(cell)
    value = parse_cell(cell)
    return value if isinstance(value, float) else math.nan
