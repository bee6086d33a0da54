"""Every reader of a run's cells follows the one rule of :mod:`ncmse.rundir.format`: the old
±1e308 clamp reads as ±∞, "inf"/"nan" text as ±∞/NaN, text that is not a number as NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncmse.rundir.format import number
from ncmse.verdicts.central_path import _int_or_none
from ncmse.verdicts.claims import omega_of


def test_claims_read_the_old_clamp_as_infinity() -> None:
    row = {"snr_2": "1e308", "snr_1": "-1e308", "snr_10": "nan", "test_snr_1": "5"}
    omega = omega_of(row)
    assert omega[0] == -math.inf and omega[1] == math.inf and math.isnan(omega[2])
    assert omega.shape == (3,)  # ordered by j; test_snr_* is not a training-split column
    assert list(omega_of({"snr": [1.0, "inf", None]})[:2]) == [1.0, math.inf]


def test_number_is_the_one_rule() -> None:
    assert number("1e308") == math.inf and number(-1e308) == -math.inf
    assert number("Infinity") == math.inf and math.isnan(number("")) and math.isnan(number(None))
    assert math.isnan(number("cache")) and number(" 0.5 ") == 0.5 and number(True) == 1.0
    assert number(np.float32(0.1)) == float(np.float32(0.1))  # not rounded through its text
    assert number(1e307) == 1e307  # below the clamp: a number


def test_central_path_reads_cells_through_it() -> None:
    assert _int_or_none("1e308") is None  # ±∞ is no count
    assert _int_or_none("128") == 128 and _int_or_none("x") is None


#: values that test a cell formatter: NaN, ±∞, the old clamp, booleans, None, tiny and huge
#: floats, NumPy scalars, ints and text (with a comma and a quote, which the CSV must quote)
TRICKY = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    True,
    False,
    None,
    5e-324,
    1.7976931348623157e308,
    0.1,
    -0.0,
    1e-17,
    np.float64(0.30000000000000004),
    np.float32(0.1),
    np.int64(7),
    3,
    0,
    "holds",
    "a, b",
    'say "x"',
    "",
]


#: (value, its text in a line of claims.csv / accuracy_gaps.csv / results.csv's verdict columns,
#: as those tables have always been written)
TABLE_CELLS = [
    (math.nan, "nan"),
    (math.inf, "inf"),
    (-math.inf, "-inf"),
    (1e308, "1e+308"),
    (-1e308, "-1e+308"),
    (True, "true"),
    (False, "false"),
    (None, ""),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (0.1, "0.1"),
    (-0.0, "-0.0"),
    (1e-17, "1e-17"),
    (0.30000000000000004, "0.30000000000000004"),
    (3, "3"),
    (0, "0"),
    ("holds", "holds"),
    ("a, b", '"a, b"'),
    ('say "x"', '"say ""x"""'),
    ("", ""),
]


def _csv_line(cells: list[object]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def test_table_cell_writes_what_the_derived_tables_wrote() -> None:
    from ncmse.rundir.format import table_cell

    for value, text in TABLE_CELLS:
        assert _csv_line([table_cell(value), "x"]) == text + ",x\n", value
    # NumPy scalars are written at their value (repr would write "np.float64(0.5)")
    assert table_cell(np.float64(0.5)) == "0.5" and table_cell(np.bool_(True)) == "true"
    assert _csv_line([table_cell(np.float32(0.1))]) == repr(float(np.float32(0.1))) + "\n"


def test_csv_cell_and_table_cell_differ_only_in_booleans() -> None:
    from ncmse.rundir.format import csv_cell, parse_cell, table_cell

    for value in TRICKY:
        if isinstance(value, (bool, np.bool_)):
            assert str(csv_cell(value)).lower() == table_cell(value)
            assert parse_cell(csv_cell(value)) == parse_cell(table_cell(value)) == float(value)
        else:
            assert csv_cell(value) == table_cell(value), value


def _old_flag(value: object) -> bool | None:
    """How the central-path fit read the ``balanced`` cell."""
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text == "true" else (False if text == "false" else None)
    x = number(value)
    return None if math.isnan(x) else bool(x)


def test_flag_reads_what_the_writers_write() -> None:
    from ncmse.rundir.format import csv_cell, flag, table_cell

    for value in (True, False, None, math.nan, 1.0, 0.0, 2, math.inf, "", " True ", "FALSE"):
        assert flag(value) == _old_flag(value), value
    for value in (True, False):
        assert flag(csv_cell(value)) is value and flag(table_cell(value)) is value
    assert flag("1e308") is True and flag("0") is False  # numbers under the one rule
    assert flag("maybe") is None and flag("nan") is None


def test_parse_json_is_from_json_of_the_text() -> None:
    from ncmse.rundir.format import parse_json, to_json

    value = {"omega": [math.inf, -math.inf, 1.0], "nc1": math.nan, "name": "run", "n": 3}
    back = parse_json(to_json(value))
    assert back["omega"] == [math.inf, -math.inf, 1.0] and back["nc1"] is None
    assert back["name"] == "run" and back["n"] == 3
    assert parse_json('{"old": -1e308, "s": "Infinity"}') == {"old": -math.inf, "s": math.inf}
    with pytest.raises(ValueError):
        parse_json("{not json")
