"""The run directory format (ncmse.rundir): round trips, old encodings, directories that the
real
commands write, and the one-way layers around it."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ncmse.cli.main import main
from ncmse.errors import InputError
from ncmse.report import write_comparison_report
from ncmse.rundir.format import from_json, to_json
from ncmse.rundir.guard import lock_run_dir, release_run_dir
from ncmse.rundir.reader import load_run, read_config, read_summary
from ncmse.rundir.writer import RunWriter, update_summary

QUIET = ["quiet=true", "tensorboard=false", "measure_test=true"]


def _sets(values: list[str]) -> list[str]:
    return [x for v in values for x in ("--set", v)]


# --------------------------------------------------------------------------- the format


def test_rows_round_trip_through_csv_and_jsonl(tmp_path: Path) -> None:
    rows = [
        {"epoch": 0, "nc1": math.nan, "snr": [math.inf, 2.0], "balanced": True, "m": "direct"},
        {"epoch": 1, "nc1": 0.125, "snr": [3.0, -math.inf], "balanced": False, "m": "cache"},
    ]
    w = RunWriter(tmp_path)
    w.write_rows(rows)
    for name in ("metrics.csv", "metrics.jsonl"):
        (tmp_path / "other").mkdir(exist_ok=True)
        (tmp_path / "other" / name).write_bytes((tmp_path / name).read_bytes())
        run = load_run(tmp_path / "other")
        (tmp_path / "other" / name).unlink()
        assert run.num_rows == 2
        assert np.isnan(run.columns["nc1"][0]) and run.columns["nc1"][1] == 0.125
        assert run.columns["snr_1"].tolist() == [math.inf, 3.0]
        assert run.columns["snr_2"].tolist() == [2.0, -math.inf]
        assert run.text_columns["m"] == ["direct", "cache"]
        assert run.final()["balanced"] is False
    assert "inf" in (tmp_path / "metrics.csv").read_text()
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # strict JSON: no NaN/Infinity tokens
        assert "NaN" not in line and "Infinity" not in line


def test_text_columns_read_back_as_text_when_every_cell_is_empty(tmp_path: Path) -> None:
    """``flags`` with nothing flagged (and any other text column left empty) stays text."""
    rows = [
        {"epoch": e, "nc1": 0.5, "flags": "", "nc4_method": "", "test_flags": "", "flow": "gd"}
        for e in range(3)
    ]
    RunWriter(tmp_path).write_rows(rows)
    for name in ("metrics.csv", "metrics.jsonl"):
        (tmp_path / "other").mkdir(exist_ok=True)
        (tmp_path / "other" / name).write_bytes((tmp_path / name).read_bytes())
        run = load_run(tmp_path / "other")
        (tmp_path / "other" / name).unlink()
        for column in ("flags", "nc4_method", "test_flags"):
            assert column not in run.columns, (name, column)
            assert run.text_columns[column] == ["", "", ""], (name, column)
        assert run.text_columns["flow"] == ["gd"] * 3
        assert run.final()["flags"] == ""
        assert run.columns["nc1"].tolist() == [0.5] * 3


def test_every_string_valued_metric_is_a_text_column(tmp_path: Path) -> None:
    """The string-valued keys of a real NCResult read back as text, even when empty."""
    import torch

    from ncmse import measure_features

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    features = torch.randn(40, 6, generator=gen, dtype=torch.float64) + 3.0 * labels[:, None]
    W = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    row = measure_features(features, labels, W, None, num_classes=4).to_dict()
    strings = {k: "" for k, v in row.items() if isinstance(v, str)}
    assert {"flags", "nc4_method"} <= set(strings)
    RunWriter(tmp_path).write_rows([{"epoch": 0, **strings}, {"epoch": 1, **strings}])
    run = load_run(tmp_path)
    assert set(strings) <= set(run.text_columns) and not set(strings) & set(run.columns)


def test_summary_keeps_infinity_apart_from_nan(tmp_path: Path) -> None:
    summary = {"kind": "train", "final": {"snr": [math.inf, 1.0], "nc1": math.nan}, "n": 3}
    RunWriter(tmp_path).write_summary(summary)
    text = (tmp_path / "summary.json").read_text()
    assert '"inf"' in text and "null" in text
    back = read_summary(tmp_path)
    assert back["final"]["snr"] == [math.inf, 1.0] and back["final"]["nc1"] is None
    assert update_summary(tmp_path, claims={"c1": "held"})["claims"] == {"c1": "held"}
    assert read_summary(tmp_path)["kind"] == "train"


def test_reader_accepts_every_old_encoding(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(
        json.dumps({"kind": "train", "loss": "ce", "a": 1e308, "b": -1e308, "c": "inf", "d": None})
    )
    (tmp_path / "metrics.csv").write_text("epoch,x,y,z\n1,,nan,1e+308\n2,inf,-inf,0.5\n")
    run = load_run(tmp_path)
    assert (run.summary["a"], run.summary["b"], run.summary["c"]) == (math.inf, -math.inf, math.inf)
    assert run.describe("loss") == "ce"  # summaries before loss_name
    assert np.isnan(run.columns["x"][0]) and np.isnan(run.columns["y"][0])
    assert run.columns["z"].tolist() == [math.inf, 0.5]
    assert from_json(["-Infinity", "NaN"])[0] == -math.inf and math.isnan(from_json("NaN"))
    assert to_json(math.nan) == "null" and to_json(-math.inf) == '"-inf"'


def test_damaged_files(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{not json")
    (tmp_path / "config.yaml").write_text("[1, 2]")
    assert read_summary(tmp_path, strict=False) is None
    assert read_config(tmp_path, strict=False) is None
    with pytest.raises(InputError, match="as JSON"):
        read_summary(tmp_path)
    with pytest.raises(InputError, match="YAML mapping"):
        read_config(tmp_path)


def _collapse_run(path: Path) -> Path:
    """A finished MSE run directory whose rows collapse (the synthetic control of test_claims)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "verdicts"))
    from test_claims import TPT, collapse_rows

    path.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(path)
    writer.write_rows(collapse_rows())
    writer.write_summary({"kind": "train", "status": "finished", "loss_name": "mse",
                          "tpt_epoch": TPT})  # fmt: skip
    return path


def _csv_lines(path: Path) -> list[str]:
    return (path / "metrics.csv").read_text().splitlines()


def _write_csv(path: Path, header: str, rows: list[str]) -> None:
    (path / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")
    (path / "metrics.jsonl").unlink(missing_ok=True)


def test_rows_are_read_in_epoch_order(tmp_path: Path) -> None:
    """Reversing metrics.csv flipped perp_falls and nc2_nc3_nc4_fall (issue 19.5)."""
    from ncmse.verdicts.record import run_claims

    run_dir = _collapse_run(tmp_path / "r")
    forward = run_claims(load_run(run_dir))[0]
    assert all(c["holds"] is True for c in forward)
    header, *rows = _csv_lines(run_dir)
    _write_csv(run_dir, header, rows[::-1])
    run = load_run(run_dir)
    assert run.columns["epoch"].tolist() == sorted(run.columns["epoch"].tolist())
    assert run_claims(run)[0] == forward


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("abc", r"line 4: column 'nc1' holds 'abc', not a number"),
        ("inf", r"line 4: column 'train_error' holds 'inf', which is not a fraction in \[0, 1\]"),
        ("loss", r"line 4: column 'loss' holds '-inf', which is not finite"),
        ("duplicate", r"line 5: epoch 2 is measured twice \(also line 4\)"),
        ("blank", r"line 4: an empty line between two rows"),
        ("empty", r"line 4: a row with no values"),
        ("epoch", r"line 4: column 'epoch' holds '2.5', not a whole number"),
    ],
)
def test_damaged_rows_are_a_one_line_error(tmp_path: Path, damage: str, message: str,
                                           capsys) -> None:  # fmt: skip
    run_dir = _collapse_run(tmp_path / "r")
    header, *rows = _csv_lines(run_dir)
    names = header.split(",")
    cells = rows[2].split(",")  # line 4: epoch 2
    if damage == "abc":
        cells[names.index("nc1")] = "abc"
    elif damage == "inf":
        cells[names.index("train_error")] = "inf"
    elif damage == "loss":
        cells[names.index("loss")] = "-inf"
    elif damage == "epoch":
        cells[names.index("epoch")] = "2.5"
    rows[2] = ",".join(cells)
    if damage == "duplicate":
        rows.insert(3, rows[2])
    elif damage == "blank":
        rows[2] = ""
    elif damage == "empty":
        rows[2] = "," * (len(names) - 1)
    _write_csv(run_dir, header, rows)
    with pytest.raises(InputError, match=message) as info:
        load_run(run_dir)
    assert "metrics.csv" in str(info.value) and "\n" not in str(info.value)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.csv" in err[0]


def test_damaged_jsonl_rows_are_an_error(tmp_path: Path) -> None:
    run_dir = _collapse_run(tmp_path / "r")
    (run_dir / "metrics.csv").unlink()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines.insert(5, lines[4])
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")  # a blank line at the end
    with pytest.raises(InputError, match=r"metrics.jsonl' line 6: epoch 4 is measured twice"):
        load_run(run_dir)


def test_trailing_blank_lines_and_text_columns_are_not_damage(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "train"}))
    (tmp_path / "metrics.csv").write_text("epoch,nc4_method,x\n2,direct,1\n1,cache,\n\n")
    run = load_run(tmp_path)
    assert run.columns["epoch"].tolist() == [1.0, 2.0]
    assert run.text_columns["nc4_method"] == ["cache", "direct"]
    assert np.isnan(run.columns["x"][0]) and run.columns["x"][1] == 1.0


def test_lock_refuses_then_clears_only_run_entries(tmp_path: Path) -> None:
    run = tmp_path / "r"
    lock_run_dir(run, new=True, resumable=False)
    release_run_dir(run)
    (run / "metrics.csv").write_text("x\n")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite") as refused:
        lock_run_dir(run, new=True, resumable=False)
    assert "--resume" not in str(refused.value)  # ncmse ufm cannot resume
    with pytest.raises(InputError, match="not an ncmse run directory"):
        lock_run_dir(run, new=True, overwrite=True)  # no summary/config/checkpoint: refused
    (run / "summary.json").write_text('{"kind": "ufm", "status": "finished"}')
    lock_run_dir(run, new=True, overwrite=True)
    release_run_dir(run)
    assert not (run / "metrics.csv").exists() and (run / "notes.txt").exists()
    assert RunWriter(tmp_path / "x", enabled=False).update_summary(a=1) == {"a": 1}
    assert not (tmp_path / "x").exists()  # a disabled writer writes nothing


# --------------------------------------------------------------------------- real directories


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "ce"
    argv = ["train", "--config", "tiny", *_sets([*QUIET, "epochs=2", "loss=ce", "report=true"])]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_report_of_a_directory_written_by_ncmse_train(ce_run: Path) -> None:
    assert (ce_run / "report.html").is_file()  # asked for by the CLI after the run
    run = load_run(ce_run)
    assert run.kind == "train" and run.num_rows == 3  # epochs 0, 1, 2
    assert run.describe("loss") == "ce" and run.summary["loss_name"] == "ce"
    assert "loss" not in run.summary
    # a CE run optimises cross-entropy; its SPEC loss is the MSE of its outputs (SPEC §2)
    objective, loss = run.columns["objective"], run.columns["loss"]
    assert np.all(np.isfinite(objective)) and not np.allclose(objective, loss)
    assert run.has("test_objective")
    html = (ce_run / "report.html").read_text()
    assert "objective" in html and (ce_run / "figures" / "objective.png").is_file()
    assert run.label.startswith("digits/") and run.label.endswith("CE seed 0")


def test_comparison_report_of_real_runs(ce_run: Path, tmp_path: Path) -> None:
    argv = ["train", "--config", "tiny", *_sets([*QUIET, "epochs=2", "report=false"])]
    mse = tmp_path / "mse"
    assert main([*argv, "--out", str(mse)]) == 0
    assert not (mse / "report.html").exists()
    page = write_comparison_report([ce_run, mse], tmp_path / "cmp")
    text = page.read_text()
    for run, loss in ((ce_run, "ce"), (mse, "mse")):  # one verdict row per run, with its loss
        row = rf"<tr><td>(<a [^>]*>)?{run.name}(</a>)?</td><td>{loss}</td>"
        assert len(re.findall(row, text)) == 1, run
    # claim 4 pairs the two runs (same dataset, model, seed) in one row of the accuracy gap
    assert f"<td>{mse.name}</td><td>{ce_run.name}</td>" in text


@pytest.mark.slow
def test_report_of_a_directory_written_by_ncmse_sweep(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    argv = ["sweep", "--preset", "tiny", "--seeds", "0", "--out", str(out), "--set", "epochs=2"]
    assert main(argv) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["report"] and Path(manifest["report"]).is_file()
    (entry,) = manifest["runs"]
    assert load_run(entry["run_dir"]).summary["status"] == "finished"


# --------------------------------------------------------------------------- layers


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint('MODULES=' + json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out.rsplit("MODULES=", 1)[1]))


def test_training_and_ufm_never_import_the_report() -> None:
    mods = _modules_after("import ncmse.train.loop, ncmse.ufm.runner, ncmse.train.setup")
    assert not {m for m in mods if m.startswith("ncmse.report")}
    assert "matplotlib" not in mods


def test_sweep_never_imports_the_report() -> None:
    """Report and sweep are peers: the CLI asks for the comparison report after a sweep."""
    import ncmse.sweep

    root = Path(ncmse.sweep.__file__).parent
    mods = _modules_after(
        "import " + ", ".join(f"ncmse.sweep.{p.stem}" for p in sorted(root.glob("*.py")))
    )
    assert not {m for m in mods if m.startswith("ncmse.report")}
    assert "matplotlib" not in mods
    import ast

    for path in root.glob("*.py"):  # imports inside functions count too
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith("ncmse.report") for n in names), path.name


def test_cli_help_and_argument_errors_do_not_import_torch() -> None:
    code = (
        "from ncmse.cli.main import main\n"
        "for argv in (['--help'], ['train', '--bogus'], ['ufm', '--help'], ['sweep', '--nope']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass"
    )
    mods = _modules_after(code)
    assert "torch" not in mods and "matplotlib" not in mods


def test_in_package_imports_use_public_names() -> None:
    """``__all__`` is the truth: a name imported from another ncmse module is in its __all__."""
    import ast
    import importlib.util

    import ncmse

    root = Path(ncmse.__file__).parent
    outside = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ncmse")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                is_module = hasattr(module, "__path__") and (
                    importlib.util.find_spec(f"{node.module}.{alias.name}") is not None
                )
                if not is_module and alias.name not in getattr(module, "__all__", ()):
                    outside.append(f"{path.name}: {node.module}.{alias.name}")
    assert not outside
