"""Shared fixtures of the test suite.

The tests sit in folders that mirror the packages of ``src/ncmse`` (collapse, rundir, train,
verdicts, ufm, report, sweep); ``test_layers.py`` checks the package layers. This folder is put
on ``sys.path`` so every test imports the float64 references of ``reference_impl.py``.

Tests marked ``slow`` take more than a few seconds: ``python -m pytest -m "not slow"`` leaves them
out for a quick loop; ``python -m pytest`` (CI) runs them all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

#: ``--set`` items of a quiet training run that writes no report and no TensorBoard events
QUIET = ("quiet=true", "report=false", "tensorboard=false")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``ncmse train --config tiny`` run of 2 epochs (quiet, no report), trained once
    per session. Read it only: a test that changes a run directory copies this one first."""
    from ncmse.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    sets = [x for s in (*QUIET, "epochs=2") for x in ("--set", s)]
    assert main(["train", "--config", "tiny", *sets, "--out", str(out)]) == 0
    return out
