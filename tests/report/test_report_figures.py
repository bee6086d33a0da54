"""Figures of several runs: seed bands, one legend, the paper's datasets × networks grid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_report import EPOCHS, write_train_run

from ncmse.report.compare import (
    OVERLAYS,
    plot_grids,
    plot_overlays,
    seed_groups_of,
)
from ncmse.report.style import LOSS_COLOURS
from ncmse.rundir.reader import load_run

SEEDS = (0, 1, 2)
KEEP = ("train_error", "nc1", "nc4", "snr_1", "snr_2", "snr_9", "loss_nc1", "loss_nc23",
        "loss_perp", "loss", "equinorm_classifier", "test_accuracy")  # fmt: skip


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> list[Path]:
    """MSE and CE on cifar10/resnet18, three seeds each."""
    root = tmp_path_factory.mktemp("seeds")
    return [
        write_train_run(
            root / f"{loss}-{seed}", loss=loss, seed=seed, epochs=EPOCHS[::2], keep=KEEP
        )  # fmt: skip
        for loss in ("mse", "ce")
        for seed in SEEDS
    ]


def test_seed_groups_aggregate_median_min_max(seed_runs: list[Path]) -> None:
    """Median and min–max over the seeds of one configuration, against numpy on the raw CSVs."""
    runs = [load_run(d) for d in seed_runs]
    groups = seed_groups_of(runs)
    assert [(g.loss, len(g.runs)) for g in groups] == [("mse", 3), ("ce", 3)]
    for group in groups:
        x, median, low, high, count = group.aggregate("nc1")
        table = np.array([r.columns["nc1"] for r in group.runs], dtype=np.float64)
        np.testing.assert_array_equal(x, group.runs[0].columns["epoch"])
        np.testing.assert_allclose(median, np.median(table, axis=0), rtol=0, atol=0)
        np.testing.assert_allclose(low, table.min(axis=0), rtol=0, atol=0)
        np.testing.assert_allclose(high, table.max(axis=0), rtol=0, atol=0)
        assert (count == 3).all()
        assert (high > low).any(), "seeds differ: the band has width"
        assert group.tpt() == min(e for e in EPOCHS[::2] if e >= 30)


def test_a_partial_seed_is_counted_where_it_has_values(tmp_path: Path) -> None:
    """A seed that stopped early contributes only to the epochs it measured."""
    dirs = [
        write_train_run(tmp_path / name, seed=seed, keep=("nc1",), epochs=[0, 1, 2, 3])
        for name, seed in (("a", 0), ("b", 1))
    ]
    short = dirs[1] / "metrics.csv"
    short.write_text("\n".join(short.read_text().splitlines()[:3]) + "\n")
    (dirs[1] / "metrics.jsonl").unlink()
    (group,) = seed_groups_of([load_run(d) for d in dirs])
    x, median, _, _, count = group.aggregate("nc1")
    assert list(count) == [2, 2, 1, 1]
    full = load_run(dirs[0]).columns["nc1"]
    assert median[3] == full[3]


def test_overlays_band_legend_palette_and_new_figures(seed_runs, tmp_path: Path) -> None:
    figures = plot_overlays([load_run(d) for d in seed_runs], tmp_path)
    names = {f.name for f in figures}
    assert {"overlay_snr", "overlay_decomposition", "overlay_nc2_classifier"} <= names
    assert names <= {f"overlay_{stem}" for stem, _, _ in OVERLAYS}
    assert {f.name: f.clipped for f in figures if f.clipped} == {}
    assert {f.name: f.legends_over_data for f in figures if f.legends_over_data} == {}
    for fig in figures:
        assert fig.pdf is not None and fig.pdf.stat().st_size > 0
        svg = fig.svg.read_text()
        assert svg.count('id="legend_') == 1, fig.name  # one legend per figure
        assert "min–max over seeds" in svg and "median TPT epoch" in svg
        assert LOSS_COLOURS["mse"].lower() in svg.lower()
        assert LOSS_COLOURS["ce"].lower() in svg.lower()
    decomposition = next(f for f in figures if f.name == "overlay_decomposition")
    assert "L_NC1" in decomposition.svg.read_text() and "L_⊥" in decomposition.svg.read_text()


def test_zero_on_a_log_overlay_is_drawn_at_a_floor(seed_runs, tmp_path: Path) -> None:
    """nc4 = 0 from epoch 60 on: the overlay marks the floor and says so in the caption."""
    figures = plot_overlays([load_run(d) for d in seed_runs], tmp_path)
    nc34 = [f for f in figures if f.name == "overlay_nc3_nc4"]
    assert nc34 and "nc4 = 0 drawn at" in nc34[0].caption
    assert "0 drawn at 10" in nc34[0].svg.read_text()


def _grid_runs(root: Path, cells) -> list[Path]:
    return [
        write_train_run(
            root / f"{d}-{m}-{loss}-{s}",
            dataset=d,
            model=m,
            loss=loss,
            seed=s,
            epochs=EPOCHS[::4],
            keep=("train_error", "nc1"),
        )  # fmt: skip
        for d, m in cells
        for loss in ("mse", "ce")
        for s in (0, 1)
    ]


def _axes_count(svg: str) -> int:
    return len(re.findall(r'<g id="axes_\d+"', svg))


def test_grid_lays_out_datasets_by_network_families(tmp_path: Path) -> None:
    """The paper's layout: rows = datasets, columns = network families; a missing cell says
    "no run"; MSE and CE in their fixed colours; nothing clipped."""
    cells = [("mnist", "vgg11"), ("mnist", "resnet18"), ("stl10", "vgg19"), ("stl10", "resnet50")]
    runs = [load_run(d) for d in _grid_runs(tmp_path / "runs", cells)]
    figures = plot_grids(runs, tmp_path / "out")
    assert {f.name for f in figures} == {"grid_train_error", "grid_nc1"}
    assert {f.name: f.clipped for f in figures if f.clipped} == {}
    assert {f.name: f.legends_over_data for f in figures if f.legends_over_data} == {}
    svg = next(f for f in figures if f.name == "grid_nc1").svg.read_text()
    assert _axes_count(svg) == 4  # 2 datasets × 2 families (vgg, resnet)
    for title in ("mnist · vgg11", "mnist · resnet18", "stl10 · vgg19", "stl10 · resnet50"):
        assert title in svg
    assert svg.count('id="legend_') == 1
    assert LOSS_COLOURS["mse"].lower() in svg.lower() and LOSS_COLOURS["ce"].lower() in svg.lower()


def test_partial_grid_renders_one_row_and_empty_cells(tmp_path: Path) -> None:
    """One dataset: one row. Two datasets where one lacks a network: that cell says no run."""
    runs = [load_run(d) for d in _grid_runs(tmp_path / "one", [("fashionmnist", "mlp")])]
    (grid, *_) = plot_grids(runs, tmp_path / "out1")
    assert _axes_count(grid.svg.read_text()) == 1 and not grid.clipped
    runs = [load_run(d) for d in _grid_runs(tmp_path / "two",
                                            [("mnist", "vgg11"), ("mnist", "resnet18"),
                                             ("cifar10", "vgg13")])]  # fmt: skip
    figures = plot_grids(runs, tmp_path / "out2")
    svg = figures[0].svg.read_text()
    assert "cifar10 · resnet: no run" in svg
    assert {f.name: f.clipped for f in figures if f.clipped} == {}


def test_the_papers_thirty_presets_make_a_five_by_three_grid(tmp_path: Path) -> None:
    """The 30 paper presets (5 datasets × 3 networks × MSE/CE): one panel per (dataset,
    network family), as the paper lays them out, with nothing clipped."""
    import yaml

    import ncmse

    dirs = []
    for path in sorted((Path(ncmse.__file__).parent / "configs").glob("paper-*.yaml")):
        preset = yaml.safe_load(path.read_text())
        dirs.append(
            write_train_run(
                tmp_path / path.stem,
                dataset=preset["dataset"],
                model=preset["model"],
                loss=preset["loss"],
                epochs=EPOCHS[::6],
                keep=("nc1",),
                test=False,
            )  # fmt: skip
        )
    assert len(dirs) == 30
    (grid,) = plot_grids([load_run(d) for d in dirs], tmp_path / "out")
    svg = grid.svg.read_text()
    assert _axes_count(svg) == 15 and "no run" not in svg
    titles = re.findall(r"<!-- ((?:mnist|fashionmnist|cifar10|svhn|stl10) · \w+) -->", svg)
    rows = ("mnist", "fashionmnist", "cifar10", "svhn", "stl10")
    assert [t.split(" · ")[0] for t in titles] == [d for d in rows for _ in range(3)]
    assert [t.split(" · ")[1].rstrip("0123456789") for t in titles[:3]] == [
        "vgg", "resnet", "densenet"]  # fmt: skip
    assert grid.clipped == ()
