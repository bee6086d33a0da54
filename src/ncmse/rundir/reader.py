"""Reading a run directory: :func:`load_run` -> :class:`Run`, :func:`read_summary`,
:func:`read_config` (strict or lenient) and :func:`read_rows` (checked: damaged lines and cells
are errors naming the line). Cells are read by :mod:`ncmse.rundir.format`; files are written by
:mod:`ncmse.rundir.writer`. Layout: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ncmse.collapse.result import flatten_row
from ncmse.errors import InputError
from ncmse.rundir.format import (
    TEXT_COLUMNS,
    all_bool,
    from_json,
    parse_cell,
    plain,
    text_cell,
)

__all__ = [
    "Run",
    "load_run",
    "order_rows",
    "read_config",
    "read_rows",
    "read_summary",
]


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_summary(run_dir: str | Path, *, strict: bool = True) -> dict[str, Any] | None:
    """``run_dir/summary.json`` decoded by :func:`from_json`.

    Parameters
    ----------
    strict : bool
        True: a missing file gives None, a damaged one an :class:`InputError`. False (sweeps):
        a damaged or non-object file also gives None.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if not strict:
            return None
        raise InputError(
            f"cannot read {str(path)!r} as JSON ({exc}); rerun the command that "
            "wrote it or remove the damaged file"
        ) from exc
    if not isinstance(data, dict):
        if not strict:
            return None
        raise InputError(f"{str(path)!r} must hold a JSON object, not {type(data).__name__}")
    return from_json(data)


def read_config(run_dir: str | Path, *, strict: bool = True) -> dict[str, Any] | None:
    """``run_dir/config.yaml`` as a flat mapping (None when missing; lenient: also when damaged).

    Raises
    ------
    InputError
        With ``strict``, when the file is not a YAML mapping.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        if not strict:
            return None
        if isinstance(exc, UnicodeDecodeError):
            raise _not_utf8(path, exc) from None
        text = " ".join(str(exc).split())
        raise InputError(
            f"{str(path)!r} is not valid YAML ({text}); fix the file or remove it"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        if not strict:
            return None
        raise InputError(f"{str(path)!r} must hold a YAML mapping, not {type(data).__name__}")
    return data


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` (cells as text) or ``.jsonl`` file (decoded, ``snr`` lists expanded).

    Raises
    ------
    InputError
        If a line is damaged (wrong number of cells, not JSON, an empty line between rows).
    """
    return [row for _, row in _read_numbered(Path(path))]


def _read_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of every row of a metrics file (line 1 is a CSV's header)."""
    try:
        if path.suffix == ".jsonl":
            return _read_jsonl(path)
        return _read_csv(path)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> InputError:
    return InputError(
        f"{str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
        f"{exc.start}); the file is damaged or not ncmse's: rerun the run or restore it"
    )


def _damaged(path: Path, line_no: int, what: str) -> InputError:
    return InputError(
        f"{str(path)!r} line {line_no}: {what}; the file is damaged — rerun the run or fix "
        "that line"
    )


def _no_gaps(path: Path, lines: list[tuple[int, bool]]) -> None:
    """An empty line between two rows is damage; empty lines at the end are not."""
    seen_blank: int | None = None
    for line_no, blank in lines:
        if blank:
            seen_blank = line_no if seen_blank is None else seen_blank
        elif seen_blank is not None:
            raise _damaged(path, seen_blank, "an empty line between two rows")


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return []
        rows, lines = [], []
        for cells in reader:
            line_no = reader.line_num
            lines.append((line_no, not cells))
            if not cells:
                continue
            if len(cells) != len(header):
                raise InputError(
                    f"{str(path)!r} line {line_no} has {len(cells)} cells but the header has "
                    f"{len(header)}; the file is damaged — rerun the run or truncate that line"
                )
            rows.append((line_no, dict(zip(header, cells))))
    _no_gaps(path, lines)
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows, lines = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        lines.append((line_no, not line.strip()))
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(
                f"{str(path)!r} line {line_no} is not JSON ({exc}); the file is damaged"
            ) from exc
        if not isinstance(row, dict):
            raise _damaged(path, line_no, f"a JSON {type(row).__name__}, not an object")
        rows.append((line_no, flatten_row(from_json(row))))
    _no_gaps(path, lines)
    return rows


#: columns of a training run's rows that hold a finite number in every row where they are set
_FINITE_COLUMNS = frozenset(
    {"lr", "wall_time", "flow_time", "train_error", "accuracy", "nc4", "loss", "loss_nc1",
     "loss_nc23", "loss_perp", "loss_ls", "objective", "lam"}
)  # fmt: skip
#: columns of fractions, in [0, 1]
_UNIT_COLUMNS = frozenset({"train_error", "accuracy", "nc4"})


def _check_cells(path: Path, numbered: list[tuple[int, dict[str, Any]]]) -> None:
    """Every cell of a numeric column is a number, and the training columns are in range.

    A column is numeric when any of its cells is a number (text columns stay text); an empty
    cell means absent. Rows with an ``epoch`` are a training run's: their fractions lie in
    [0, 1] and their losses, rates and times are finite.
    """
    names = list(dict.fromkeys(k for _, row in numbered for k in row))
    for line_no, row in numbered:
        if not any(str(v).strip() for v in row.values() if v is not None):
            raise _damaged(path, line_no, "a row with no values")
    training = "epoch" in names
    for name in names:
        if name.removeprefix("test_") in TEXT_COLUMNS:
            continue
        cells = [(line_no, row.get(name)) for line_no, row in numbered]
        parsed = [(line_no, cell, parse_cell(cell)) for line_no, cell in cells]
        if not any(isinstance(v, float) for _, _, v in parsed):
            continue  # a text column
        for line_no, cell, value in parsed:
            if not isinstance(value, float):
                raise _damaged(path, line_no, f"column {name!r} holds {cell!r}, not a number")
            if training and not _in_range(name.removeprefix("test_"), value):
                raise _damaged(
                    path,
                    line_no,
                    f"column {name!r} holds {cell!r}, which "
                    f"{_RANGE_TEXT[name.removeprefix('test_') in _UNIT_COLUMNS]}",
                )


_RANGE_TEXT = {True: "is not a fraction in [0, 1]", False: "is not finite"}


def _in_range(name: str, value: float) -> bool:
    if math.isnan(value):
        return True
    if name in _UNIT_COLUMNS:
        return 0.0 <= value <= 1.0
    return name not in _FINITE_COLUMNS or math.isfinite(value)


def order_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str = "the rows",
    lines: Sequence[int] | None = None,
) -> list[Mapping[str, Any]]:
    """Measurement rows in epoch order (SPEC §7 *Order*).

    Parameters
    ----------
    rows : iterable of mapping
        Rows with an ``epoch`` (a number, or its text).
    source : str
        What the rows came from (named in errors: a file).
    lines : sequence of int, optional
        The line of each row in ``source`` (named in errors; default: the row's position).

    Returns
    -------
    list of mapping
        The same row objects, sorted by epoch.

    Raises
    ------
    InputError
        If a row has no epoch, an epoch that is not a non-negative whole number, or two rows
        have the same epoch.
    """
    rows = list(rows)
    where = list(lines) if lines is not None else list(range(1, len(rows) + 1))
    word = "line" if lines is not None else "row"
    epochs = []
    for line_no, row in zip(where, rows):
        cell = row.get("epoch")
        value = parse_cell(cell)
        if not isinstance(value, float) or not (
            math.isfinite(value) and value >= 0 and value.is_integer()
        ):
            raise InputError(
                f"{source} {word} {line_no}: column 'epoch' holds {cell!r}, not a whole number "
                ">= 0; the file is damaged — rerun the run or fix that line"
            )
        epochs.append(value)
    first_at: dict[float, int] = {}
    for line_no, epoch in zip(where, epochs):
        if epoch in first_at:
            raise InputError(
                f"{source} {word} {line_no}: epoch {epoch:g} is measured twice (also {word} "
                f"{first_at[epoch]}); the file is damaged — rerun the run or remove one of them"
            )
        first_at[epoch] = line_no
    order = sorted(range(len(rows)), key=epochs.__getitem__)
    return [rows[i] for i in order]


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
        """``dataset``, ``model``, ``loss`` or ``seed``: summary.json first, else config.yaml.

        The loss's name is ``loss_name`` in summary.json (``loss`` in files before that field).
        """
        candidates = ("loss_name", "loss") if key == "loss" else (key,)
        value = next(
            (
                self.summary[k]
                for k in candidates
                if isinstance(self.summary.get(k), (str, int))
                and not isinstance(self.summary.get(k), bool)
            ),
            None,
        )
        if value is None:
            value = self.config.get(key)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                value = None
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
            final = {k: plain(v) for k, v in row.items()}
            for name in self.bool_columns:
                if final[name] == final[name]:  # not NaN
                    final[name] = bool(final[name])
            return final
        final = self.summary.get("final")
        return flatten_row(final) if isinstance(final, Mapping) else {}


def load_run(run_dir: str | Path) -> Run:
    """Read the run directory ``run_dir`` (``metrics.csv``, else ``metrics.jsonl``).

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
    csv_path, jsonl_path = path / "metrics.csv", path / "metrics.jsonl"
    if not ((path / "summary.json").is_file() or csv_path.is_file() or jsonl_path.is_file()):
        raise InputError(
            f"{str(path)!r} is not a run directory: it has neither summary.json nor metrics.csv; "
            "pass a folder written by `ncmse train` or `ncmse ufm`"
        )
    summary = read_summary(path) or {}
    config = read_config(path) or {}
    metrics_file = csv_path if csv_path.is_file() else jsonl_path if jsonl_path.is_file() else None
    rows = _checked_rows(metrics_file) if metrics_file is not None else []
    columns, text_columns = _columns(rows)
    kind = str(summary.get("kind", "train"))
    bools = frozenset(n for n in columns if all_bool(row.get(n) for row in rows))
    return Run(path, kind, summary, config, columns, text_columns, len(rows), metrics_file, bools)


def _checked_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics file, checked cell by cell, training rows in epoch order.

    Raises
    ------
    InputError
        Naming the file, line and column of the first damaged cell or repeated epoch.
    """
    numbered = _read_numbered(path)
    _check_cells(path, numbered)
    if not numbered or not any("epoch" in row for _, row in numbered):
        return [row for _, row in numbered]
    lines = [line_no for line_no, _ in numbered]
    return order_rows([row for _, row in numbered], source=repr(str(path)), lines=lines)


def _columns(rows: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    names = list(dict.fromkeys(k for row in rows for k in row))
    numeric: dict[str, np.ndarray] = {}
    text: dict[str, list[str]] = {}
    for name in names:
        if name.removeprefix("test_") in TEXT_COLUMNS:
            text[name] = [text_cell(row.get(name)) for row in rows]
            continue
        cells = [parse_cell(row.get(name)) for row in rows]
        if all(isinstance(c, float) for c in cells):
            numeric[name] = np.asarray(cells, dtype=np.float64)
        else:
            text[name] = ["" if isinstance(c, float) and math.isnan(c) else str(c) for c in cells]
    return numeric, text
