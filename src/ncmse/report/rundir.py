"""Read a run directory of ``ncmse train`` or ``ncmse ufm`` (docs/ARCHITECTURE.md).

The report reads only files: ``summary.json``, ``config.yaml`` and ``metrics.csv`` (falling back to
``metrics.jsonl``). Missing optional columns are tolerated; a directory with neither
``summary.json`` nor a metrics file is rejected with an :class:`~ncmse.errors.InputError`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ncmse.errors import InputError
from ncmse.result import flatten_row

__all__ = ["Run", "load_run", "snr_columns"]

_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_SNR_RE = re.compile(r"^(test_)?snr_(\d+)$")

#: Dotted config paths tried, in order, for each descriptive field (summary.json wins).
_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset", "data.dataset", "data.name", "data"),
    "model": ("model", "model.name", "model.arch", "arch", "network"),
    "loss": ("loss", "loss.name", "train.loss", "criterion"),
    "seed": ("seed", "train.seed"),
}


@dataclass(frozen=True)
class Run:
    """The contents of one run directory.

    Attributes
    ----------
    path : Path
        The run directory.
    kind : str
        ``"train"`` or ``"ufm"`` (summary.json ``kind``; ``"train"`` when absent).
    summary : dict
        Parsed summary.json (empty when absent).
    config : dict
        Parsed config.yaml (empty when absent).
    columns : dict of str -> numpy.ndarray
        Numeric metric columns (float64, NaN for empty cells; booleans as 0/1).
    text_columns : dict of str -> list of str
        Columns that are not numeric (e.g. ``nc4_method``).
    num_rows : int
        Number of measurements.
    metrics_file : Path or None
        The file the rows came from.
    bool_columns : frozenset of str
        Numeric columns whose cells were all booleans (e.g. ``balanced``).
    """

    path: Path
    kind: str
    summary: dict[str, Any]
    config: dict[str, Any]
    columns: dict[str, np.ndarray] = field(repr=False)
    text_columns: dict[str, list[str]] = field(repr=False)
    num_rows: int
    metrics_file: Path | None
    bool_columns: frozenset[str] = frozenset()

    def has(self, name: str) -> bool:
        """Whether column ``name`` exists and holds at least one finite value."""
        values = self.columns.get(name)
        return values is not None and bool(np.isfinite(values).any())

    def x_axis(self) -> tuple[np.ndarray, str]:
        """The abscissa of every curve: ``epoch`` (else ``t``, ``step``, the row index)."""
        for name, label in (("epoch", "epoch"), ("t", "time t"), ("step", "step")):
            if self.has(name):
                return self.columns[name], label
        return np.arange(self.num_rows, dtype=float), "measurement index"

    def describe(self, key: str) -> str | None:
        """``dataset``, ``model``, ``loss`` or ``seed`` from summary.json, else config.yaml."""
        value = self.summary.get(key)
        if value is None:
            value = _config_lookup(self.config, _CONFIG_KEYS.get(key, (key,)))
        return None if value is None else str(value)

    @property
    def label(self) -> str:
        """Short human label: ``dataset/model/LOSS seed s`` or the directory name."""
        parts = [self.describe(k) for k in ("dataset", "model")]
        loss = self.describe("loss")
        parts.append(loss.upper() if loss else None)
        text = "/".join(p for p in parts if p)
        seed = self.describe("seed")
        if seed is not None:
            text = f"{text} seed {seed}" if text else f"seed {seed}"
        return text or self.path.name

    @property
    def tpt_epoch(self) -> float | None:
        """First epoch of zero training error (summary.json ``tpt_epoch``), if any."""
        value = self.summary.get("tpt_epoch")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def final(self) -> dict[str, Any]:
        """The last measurement: last row of the metrics file, else summary.json ``final``."""
        if self.num_rows > 0:
            row: dict[str, Any] = {k: v[-1] for k, v in self.columns.items()}
            row.update({k: v[-1] for k, v in self.text_columns.items()})
            final = {k: _to_python(v) for k, v in row.items()}
            for name in self.bool_columns:
                if final[name] == final[name]:  # not NaN
                    final[name] = bool(final[name])
            return final
        final = self.summary.get("final")
        return flatten_row(final) if isinstance(final, Mapping) else {}


def load_run(run_dir: str | Path) -> Run:
    """Read the run directory ``run_dir``.

    Parameters
    ----------
    run_dir : str or Path
        A directory written by ``ncmse train`` or ``ncmse ufm``.

    Returns
    -------
    Run

    Raises
    ------
    InputError
        If ``run_dir`` is not a directory, has neither summary.json nor metrics.csv/jsonl, or a
        file in it cannot be parsed.
    """
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise InputError(
            f"run directory {str(run_dir)!r} does not exist or is not a directory; pass a folder "
            "written by `ncmse train` or `ncmse ufm`"
        )
    summary_path = path / "summary.json"
    csv_path, jsonl_path = path / "metrics.csv", path / "metrics.jsonl"
    if not (summary_path.is_file() or csv_path.is_file() or jsonl_path.is_file()):
        raise InputError(
            f"{str(path)!r} is not a run directory: it has neither summary.json nor metrics.csv; "
            "pass a folder written by `ncmse train` or `ncmse ufm`"
        )
    summary = _read_json(summary_path) if summary_path.is_file() else {}
    config = _read_yaml(path / "config.yaml")
    if csv_path.is_file():
        rows, metrics_file = _read_csv(csv_path), csv_path
    elif jsonl_path.is_file():
        rows, metrics_file = _read_jsonl(jsonl_path), jsonl_path
    else:
        rows, metrics_file = [], None
    columns, text_columns = _columns(rows)
    kind = str(summary.get("kind", "train"))
    bools = frozenset(n for n in columns if _all_bool(row.get(n) for row in rows))
    return Run(path, kind, summary, config, columns, text_columns, len(rows), metrics_file, bools)


def snr_columns(names: Iterable[str], *, test: bool = False) -> list[str]:
    """The ``snr_j`` (or ``test_snr_j``) column names among ``names``, ordered by j."""
    found = []
    for name in names:
        match = _SNR_RE.match(name)
        if match and bool(match.group(1)) == test:
            found.append((int(match.group(2)), name))
    return [name for _, name in sorted(found)]


def _config_lookup(config: Mapping[str, Any], candidates: Iterable[str]) -> Any:
    for dotted in candidates:
        node: Any = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, (str, int, float)) and not isinstance(node, bool):
            return node
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read {str(path)!r} as JSON ({exc}); rerun the command that wrote it or "
            "remove the damaged file"
        ) from exc
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} must hold a JSON object, not {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {str(path)!r} as YAML ({exc}); fix or remove it") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} must hold a YAML mapping, not {type(data).__name__}")
    return data


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for line_no, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise InputError(
                    f"{str(path)!r} line {line_no} has {len(cells)} cells but the header has "
                    f"{len(header)}; the file is damaged — rerun the run or truncate that line"
                )
            rows.append(dict(zip(header, cells)))
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(
                f"{str(path)!r} line {line_no} is not JSON ({exc}); the file is damaged"
            ) from exc
        rows.append(flatten_row(row))
    return rows


def _parse_cell(cell: Any) -> float | str:
    """A cell as float (booleans as 0/1, empty as NaN) or, failing that, the text."""
    if cell is None:
        return math.nan
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)):
        return float(cell)
    text = str(cell).strip()
    if text == "":
        return math.nan
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    try:
        return float(text)
    except ValueError:
        return text


def _columns(rows: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    numeric: dict[str, np.ndarray] = {}
    text: dict[str, list[str]] = {}
    for name in names:
        cells = [_parse_cell(row.get(name)) for row in rows]
        if all(isinstance(c, float) for c in cells):
            numeric[name] = np.asarray(cells, dtype=np.float64)
        else:
            text[name] = ["" if isinstance(c, float) and math.isnan(c) else str(c) for c in cells]
    return numeric, text


def _all_bool(cells: Iterable[Any]) -> bool:
    """Whether every non-empty cell is a boolean (``True``/``False`` text or a bool)."""
    seen = False
    for cell in cells:
        if cell is None or cell == "":
            continue
        if not (isinstance(cell, bool) or str(cell).strip() in _TRUE | _FALSE):
            return False
        seen = True
    return seen


def _to_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
