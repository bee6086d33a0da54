"""The report's one number format: 3 significant digits, a spread rounded like its mean."""

from __future__ import annotations

import math

import pytest

from ncmse.rundir.numfmt import plus_minus, sig3
from ncmse.sweep.collect import _pm


@pytest.mark.parametrize(
    ("mean", "spread", "scale", "text"),
    [
        (0.0347, 0.000534, 1.0, "0.0347 ± 0.0005"),  # the sweep console's "0.0347 ± 0.000534"
        (0.0347, 1e-5, 1.0, "0.0347 ± <0.0001"),
        (0.992, 0.0014, 100.0, "99.2 ± 0.1"),
        (1234.5, 56.0, 1.0, "1230 ± 60"),
        (3.47e-5, 5.3e-7, 1.0, "(3.47 ± 0.05)e-05"),
        (-0.5, 0.02, 1.0, "-0.500 ± 0.020"),
        (1.0, 0.0, 1.0, "1.00 ± 0.00"),
        (0.25, math.nan, 1.0, "0.250"),
        (math.nan, 0.1, 1.0, "—"),
    ],
)
def test_plus_minus_rounds_mean_and_spread_to_one_place(mean, spread, scale, text) -> None:
    assert plus_minus(mean, spread, scale=scale) == text


def test_plus_minus_round_trips_within_half_a_unit_of_the_last_digit() -> None:
    """The printed mean is the value to 3 significant digits (an independent check by parsing)."""
    for mean in (0.000123456, 0.0347, 0.5, 7.891, 42.42, 999.4, 12345.0):
        printed = plus_minus(mean, mean / 50).strip("()").split(" ± ")[0]
        scale = 1.0
        if ")e" in plus_minus(mean, mean / 50):
            scale = 10.0 ** int(plus_minus(mean, mean / 50).split(")e")[1])
        assert float(printed) * scale == pytest.approx(float(f"{mean:.3g}"), rel=1e-12)


def test_sig3_and_the_sweep_console_share_the_format() -> None:
    assert sig3(0.000534) == "0.000534" and sig3(1234567.0) == "1.23e+06" and sig3(3) == "3"
    assert sig3(None) == "—" and sig3(math.nan) == "—"
    assert [sig3(v) for v in (99.0, 0.5, 100.0, 0.0)] == ["99.0", "0.500", "100", "0"]
    assert _pm((0.0347, 0.000534)) == "0.0347 ± 0.0005"
    assert _pm((0.99, 0.0014), 100.0) == "99.0 ± 0.1"
