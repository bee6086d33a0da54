"""Every reader of a run's cells follows the one rule of :mod:`ncmse.rundir.format`: the old
±1e308 clamp reads as ±∞, "inf"/"nan" text as ±∞/NaN, text that is not a number as NaN."""

from __future__ import annotations

import math

import numpy as np

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
