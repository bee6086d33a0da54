"""The layers of the package, read from its import statements (every ``import``, also inside
functions): a module imports only from its own layer or the layers below it.

    errors, lazy <- collapse (+ metric.py) <- rundir <- train, verdicts, ufm <- report, sweep <- cli

``sweep`` never imports ``report`` (the CLI asks for the report after a sweep), and importing any
module of ``rundir`` loads no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ncmse

PACKAGE = Path(ncmse.__file__).resolve().parent

#: top-level part of ncmse -> its layer (a module may import its own layer and those below)
LAYERS = {
    "errors": 0,
    "lazy": 0,  # the lazy names of ncmse and ncmse.ufm
    "__init__": 1,
    "collapse": 1,
    "metric": 1,
    "rundir": 2,
    "train": 3,
    "verdicts": 3,
    "ufm": 3,
    "integrations": 3,  # adapters of the measurement to other libraries
    "report": 4,
    "sweep": 4,
    "cli": 5,
    "__main__": 5,
}


def part_of(module: str) -> str:
    """The top-level part of ``ncmse.X.Y`` (``X``), ``__init__`` for ``ncmse`` itself."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def imported_parts(path: Path) -> set[tuple[str, int]]:
    """(part, line) of every ncmse module that ``path`` imports."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ncmse":
                    found.add((part_of(alias.name), node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ncmse":
                for alias in node.names:
                    part = alias.name if alias.name in LAYERS else "__init__"
                    found.add((part, node.lineno))
            elif node.module.split(".")[0] == "ncmse":
                found.add((part_of(node.module), node.lineno))
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer() -> None:
    parts = {
        part_of("ncmse." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
        for p in modules()
    }
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_nothing_imports_upward() -> None:
    upward = []
    for path in modules():
        rel = path.relative_to(PACKAGE)
        source = part_of("ncmse." + ".".join(rel.with_suffix("").parts))
        for part, line in imported_parts(path):
            if LAYERS[part] > LAYERS[source]:
                upward.append(f"{rel}:{line} ({source}) imports ncmse.{part}")
    assert not upward, "\n".join(sorted(upward))


def test_sweep_never_imports_report() -> None:
    for path in sorted((PACKAGE / "sweep").glob("*.py")):
        assert "report" not in {part for part, _ in imported_parts(path)}, path.name


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """Negative control: a function-level import of a higher layer is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ncmse.train.loop import Trainer\n    import ncmse.cli\n")
    assert imported_parts(bad) == {("train", 2), ("cli", 3)}


def test_rundir_loads_no_torch() -> None:
    names = sorted(p.stem for p in (PACKAGE / "rundir").glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import ncmse.rundir.{n}\n" for n in names)
        + "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_architecture_module_map_is_current() -> None:
    """docs/ARCHITECTURE.md's module map is what tools/module_map.py prints from the tree."""
    import importlib.util

    tool = Path(__file__).resolve().parents[1] / "tools" / "module_map.py"
    spec = importlib.util.spec_from_file_location("module_map", tool)
    module_map = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module_map)
    assert module_map.documented() == module_map.block(), (
        "docs/ARCHITECTURE.md's module map is stale: run python tools/module_map.py --write"
    )
