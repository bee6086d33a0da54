"""The comparison's accuracy_table.csv cells go through :mod:`ncmse.rundir.format` and are what
the table's own writer wrote before: floats in full precision, empty cells without values."""

from __future__ import annotations

import csv
import io
import math

import pytest

from ncmse.report.compare import AccuracyCell, _accuracy_csv

#: final test accuracies that test the cells: NaN, ±∞, the old clamp, tiny and huge floats
TRICKY = (math.nan, math.inf, -math.inf, 1e308, 5e-324, 1.7976931348623157e308, 0.1, 1e-17, 1.0)


def _old_accuracy_csv(cells: dict) -> str:
    """The accuracy table as its writer wrote it before it used the format module."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["configuration", "dataset", "model", "loss", "runs", "n_with_test_accuracy"]
    writer.writerow([*header, "test_accuracy_mean", "test_accuracy_std"])
    for (config, dataset, model), row in cells.items():
        for loss, cell in row.items():
            mean = repr(cell.mean) if cell.values else ""
            std = repr(cell.std) if cell.values else ""
            writer.writerow([config, dataset, model, loss, cell.runs, len(cell.values), mean, std])
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_accuracy_csv_is_byte_for_byte_the_old_table() -> None:
    cells = {
        ('digits/mlp, "wide"', "digits", "mlp"): {
            "mse": AccuracyCell((0.9, 0.95), 2),
            "ce": AccuracyCell((), 3),  # no run with a test accuracy: empty mean and std
        },
        ("cifar10/vgg", "cifar10", "vgg"): {"mse": AccuracyCell((0.5,), 1)},
    }
    for k, value in enumerate(TRICKY):
        cells[(f"tricky {k}", "d", "m")] = {
            "mse": AccuracyCell((value,), 1),
            "ce": AccuracyCell((value, 0.25), 2),
        }
    text = _accuracy_csv(cells)
    assert text == _old_accuracy_csv(cells)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[1]["test_accuracy_mean"] == "" and rows[1]["runs"] == "3"
    assert rows[0]["configuration"] == 'digits/mlp, "wide"'  # quoted and read back whole
    assert {r["test_accuracy_mean"] for r in rows} >= {"nan", "inf", "-inf", "1e+308", "5e-324"}


def test_accuracy_csv_of_no_cells_is_the_header() -> None:
    assert _accuracy_csv({}) == _old_accuracy_csv({})
    assert _accuracy_csv({}).count("\n") == 1
