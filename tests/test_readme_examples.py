"""The README's examples run as written: every code block preceded by ``<!-- readme-test -->``
is executed (``<!-- readme-test: file NAME -->`` writes the block to NAME first;
``<!-- readme-test: shell -->`` runs it with bash, ``ncmse`` as ``python -m ncmse``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(
    r"<!-- readme-test(?::\s*(?P<how>[^>]*?))?\s*-->\s*\n```(\w+)\n(.*?)\n```", re.S
)


def _blocks() -> list[tuple[str, str]]:
    return [(m.group("how") or "python", m.group(3)) for m in _BLOCK.finditer(README.read_text())]


def _groups() -> list[list[tuple[str, str]]]:
    """Blocks to run together: files are written before the block that follows them."""
    groups, pending = [], []
    for how, code in _blocks():
        pending.append((how, code))
        if not how.startswith("file"):
            groups.append(pending)
            pending = []
    assert not pending, "a 'file' block must be followed by a block that uses it"
    return groups


def test_readme_has_tested_examples():
    kinds = [how for how, _ in _blocks()]
    assert kinds.count("python") >= 4 and "shell" in kinds


@pytest.mark.slow
@pytest.mark.parametrize("group", _groups(), ids=lambda g: g[-1][1].splitlines()[0][:40])
def test_readme_example_runs(group, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    for how, code in group:
        if how.startswith("file"):
            (tmp_path / how.split()[1]).write_text(code + "\n")
            continue
        if how == "shell":
            code = code.replace("PYTHONPATH=.", "PYTHONPATH=.:$PYTHONPATH")
            code = re.sub(r"(?<![\w-])ncmse ", f"{sys.executable} -m ncmse ", code)
            cmd = ["bash", "-euc", code]
        else:
            cmd = [sys.executable, "-c", code]
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
