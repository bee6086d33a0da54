"""Tests of ncmse.report: run-directory reading, figures, HTML, comparison, CLI, browser rendering.

Run directories are synthetic but follow docs/ARCHITECTURE.md: metrics.csv / metrics.jsonl /
summary.json / config.yaml with collapse-like trends (nc1 falling by orders of magnitude, the SNR
singular values growing and equalising, L = L_NC1 + L_NC2/3 + L_⊥ exactly).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from ncmse.cli.main import main
from ncmse.errors import InputError, NCMSEError
from ncmse.report import load_run, write_comparison_report, write_run_report
from ncmse.report.compare import accuracy_table
from ncmse.report.style import (
    LOSS_COLOURS,
    OKABE_ITO,
    clipped_texts,
    layout_figure,
    legend_below,
    legends_over_data,
    log_floor,
    metric_label,
    new_figure,
)

C = 10
#: SPEC §6 measurement epochs (log-spaced, 50 of them up to 350).
EPOCHS = [
    *range(1, 15),
    16,
    17,
    19,
    20,
    22,
    24,
    27,
    29,
    32,
    35,
    38,
    42,
    45,
    50,
    54,
    59,
    65,
    71,
    77,
    85,
    92,
    101,
    110,
    121,
    132,
    144,
    158,
    172,
    188,
    206,
    225,
    245,
    268,
    293,
    320,
    350,
]

EXPECTED_TRAIN_FIGURES = {
    "summary",
    "error",
    "loss_decomposition",
    "nc1",
    "nc1_variants",
    "equinorm",
    "equiangular",
    "maxangle",
    "nc3",
    "nc4",
    "etf_error",
    "snr",
    "central_path",
}


def _metrics(epochs: np.ndarray, rate: float, prefix: str = "") -> dict[str, np.ndarray]:
    """Collapse-like trends of every SPEC metric (decreasing power laws, growing ω_j)."""
    e = epochs.astype(float)
    decay = (1.0 + e) ** (-rate)
    omega = np.stack([(1.0 + j + 0.5 * e) ** 0.25 * (1 + 0.3 * j / (1 + e)) for j in range(C - 1)])
    omega = -np.sort(-omega, axis=0)
    loss_nc1, loss_nc23 = 0.2 * decay, 0.1 * decay**0.8
    loss_perp = 0.01 * decay**1.5
    loss = loss_nc1 + loss_nc23 + loss_perp
    nc4 = np.where(e < 60, 0.05 * decay, 0.0)
    cols = {
        "accuracy": np.clip(1.0 - 0.9 * np.exp(-e / 15.0), 0, 1),
        "loss": loss,
        "nc1": 5.0 * decay**1.5,
        "nc1_unnormalized": 50.0 * decay**1.5,
        "nc1_trace_ratio": 2.0 * decay,
        "cdnv": 0.8 * decay,
        "equinorm_means": 0.4 * decay**0.7,
        "equinorm_classifier": 0.3 * decay**0.6,
        "equiangular_means": 0.2 * decay**0.7,
        "equiangular_classifier": 0.1 * decay**0.5,
        "maxangle_means": 0.3 * decay**0.7,
        "maxangle_classifier": 0.2 * decay**0.5,
        "nc3": 1.2 * decay,
        "nc4": nc4,
        "etf_error_means": 0.5 * decay,
        "etf_error_wm": 0.6 * decay,
        "loss_nc1": loss_nc1,
        "loss_nc23": loss_nc23,
        "loss_perp": loss_perp,
        "loss_ls": loss_nc1 + loss_nc23,
        "loss_perp_ratio": loss_perp / loss,
    }
    for j in range(C - 1):
        cols[f"snr_{j + 1}"] = omega[j]
    return {prefix + k: v for k, v in cols.items()}


def write_train_run(
    run_dir: Path,
    *,
    dataset: str = "cifar10",
    model: str = "resnet18",
    loss: str = "mse",
    seed: int = 0,
    epochs: list[int] | None = None,
    test: bool = True,
    drop: tuple[str, ...] = (),
    keep: tuple[str, ...] | None = None,
    environment: bool = True,
    test_accuracy: float | None = None,
    descriptors_in_config_only: bool = False,
) -> Path:
    """Write a synthetic ``ncmse train`` run directory and return it.

    ``drop`` removes columns; ``keep`` (when given) keeps only those columns besides ``epoch``,
    which makes cheap runs with few figures.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ep = np.asarray(EPOCHS if epochs is None else epochs)
    rate = 1.0 + 0.1 * seed + (0.2 if loss == "mse" else 0.0)
    cols: dict[str, object] = {
        "epoch": ep,
        "lr": np.where(ep < 117, 0.05, 0.005),
        "wall_time": 3.0 * ep,
    }
    train = _metrics(ep, rate)
    cols["train_error"] = np.where(ep >= 30, 0.0, 1.0 - train["accuracy"])
    cols.update(train)
    cols.update(
        {
            "lam": np.full(ep.shape, 2.5e-3),
            "num_samples": np.full(ep.shape, 50000),
            "num_classes": np.full(ep.shape, C),
            "balanced": [True] * len(ep),
            "nc4_method": ["direct"] * len(ep),
        }
    )
    if test:
        tcols = _metrics(ep, rate * 0.5, prefix="test_")
        final_acc = 0.9 if test_accuracy is None else test_accuracy
        tcols["test_accuracy"] = (
            final_acc * (1 - 0.5 * np.exp(-ep / 20.0)) / (1 - 0.5 * np.exp(-ep[-1] / 20.0))
        )
        cols.update(tcols)
    cols = {k: v for k, v in cols.items() if k not in drop}
    if keep is not None:
        cols = {k: v for k, v in cols.items() if k in ("epoch", *keep)}
    names = list(cols)
    rows = [{k: _py(cols[k][i]) for k in names} for i in range(len(ep))]
    with (run_dir / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    with (run_dir / "metrics.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tpt = next((int(e) for e, err in zip(ep, cols.get("train_error", [])) if err == 0), None)
    summary: dict[str, object] = {
        "kind": "train",
        "status": "finished",
        "tpt_epoch": tpt,
        "final": rows[-1] if rows else {},
        "lam": 2.5e-3,
        "seed": seed,
    }
    if not descriptors_in_config_only:
        summary.update({"loss_name": loss, "dataset": dataset, "model": model})
    if environment:
        summary["environment"] = {
            "python": "3.11.7",
            "torch": "2.4.0",
            "numpy": "1.26.4",
            "ncmse": "0.1.0",
            "device": "cuda: NVIDIA H100",
        }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    config = {  # flat, as ncmse train writes it (docs/ARCHITECTURE.md)
        "dataset": dataset,
        "model": model,
        "loss": loss,
        "seed": seed,
        "batch_size": 128,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "epochs": int(ep[-1]),
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


#: Columns of a cheap run: two figures (error, nc1) and a test accuracy.
FEW = ("train_error", "nc1", "test_nc1", "test_accuracy")


@pytest.fixture
def train_run(tmp_path: Path) -> Path:
    return write_train_run(tmp_path / "run", keep=FEW)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path]:
    """A full 50-row run and its report (drawn once for the module)."""
    run_dir = write_train_run(tmp_path_factory.mktemp("full") / "run")
    return run_dir, write_run_report(run_dir)


# --------------------------------------------------------------------------- reading


def test_load_run_parses_columns_and_descriptors(tmp_path: Path) -> None:
    run = load_run(write_train_run(tmp_path / "run"))
    assert run.kind == "train" and run.num_rows == len(EPOCHS)
    assert run.columns["balanced"].tolist() == [1.0] * len(EPOCHS)
    assert run.final()["balanced"] is True and run.final()["nc4_method"] == "direct"
    assert run.text_columns["nc4_method"][0] == "direct"
    assert run.columns["snr_9"].shape == (len(EPOCHS),)
    assert run.tpt_epoch == 32.0
    assert (run.describe("dataset"), run.describe("model"), run.describe("loss")) == (
        "cifar10",
        "resnet18",
        "mse",
    )
    assert run.label == "cifar10/resnet18/MSE seed 0"


def test_descriptors_fall_back_to_config(tmp_path: Path) -> None:
    run = load_run(
        write_train_run(
            tmp_path / "r",
            dataset="svhn",
            model="vgg11",
            loss="ce",
            descriptors_in_config_only=True,
        )
    )
    assert "dataset" not in run.summary
    assert (run.describe("dataset"), run.describe("model"), run.describe("loss")) == (
        "svhn",
        "vgg11",
        "ce",
    )


def test_jsonl_used_when_csv_missing(train_run: Path) -> None:
    from_csv = load_run(train_run)
    (train_run / "metrics.csv").unlink()
    run = load_run(train_run)
    assert run.metrics_file.name == "metrics.jsonl" and run.num_rows == len(EPOCHS)
    assert set(run.columns) == set(from_csv.columns)
    np.testing.assert_array_equal(run.columns["nc1"], from_csv.columns["nc1"])


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: None, "not a run directory"),
        (lambda d: (d / "summary.json").write_text("{not json"), "cannot read .* as JSON"),
        (lambda d: (d / "metrics.csv").write_text("epoch,nc1\n1,2,3\n"), "line 2 has 3 cells"),
        (lambda d: (d / "summary.json").write_text("[1, 2]"), "must hold a JSON object"),
    ],
)
def test_load_run_rejects_bad_directories(tmp_path: Path, setup, match: str) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    setup(d)
    with pytest.raises(InputError, match=match) as info:
        load_run(d)
    assert isinstance(info.value, NCMSEError) and str(d) in str(info.value)


def test_load_run_rejects_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_run(tmp_path / "nope")


# --------------------------------------------------------------------------- single run


def _embedded_images(text: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)


def test_run_report_figures_and_html(rendered) -> None:
    train_run, report = rendered
    assert report == train_run.resolve() / "report.html"
    figs = train_run / "figures"
    assert {p.stem for p in figs.glob("*.png")} == EXPECTED_TRAIN_FIGURES
    assert {p.stem for p in figs.glob("*.svg")} == EXPECTED_TRAIN_FIGURES
    assert {p.stem for p in figs.glob("*.pdf")} == EXPECTED_TRAIN_FIGURES
    assert not list(figs.glob(".*.tmp")), "temporary files left behind"
    text = report.read_text()
    images = _embedded_images(text)
    assert len(images) == len(EXPECTED_TRAIN_FIGURES)
    assert all(len(b) > 1000 for b in images)
    # self-contained: no fetched external resource of any kind
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script" not in text
    assert 'href="metrics.csv"' in text and 'href="figures/nc1.svg"' in text
    for name in ("nc1", "equinorm_means", "maxangle_classifier", "loss_perp", "snr", "nc4"):
        assert f"<td>{name}</td>" in text
    assert re.search(r"<td>balanced</td><td>[^<]*</td><td>yes</td>", text)
    assert "cuda: NVIDIA H100" in text and "recorded in summary.json" in text
    assert "momentum: 0.9" in text
    assert re.search(r"L_⊥\)\| / L = \d\.\d\de[+-]\d\d", text), "identity residual reported"


def test_run_report_opens_with_the_summary_figure_and_verdict_line(rendered) -> None:
    """2 × 3 panels first, saved as PNG, PDF and SVG, the SPEC §7 verdict line beside them."""
    train_run, report = rendered
    for fmt in ("png", "pdf", "svg"):
        assert (train_run / "figures" / f"summary.{fmt}").stat().st_size > 1000
    text = report.read_text()
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", text)
    assert headings[0] == "Run summary"
    first = text[text.index('id="summary"') : text.index('id="claims"')]
    assert 'id="fig-summary"' in first and 'class="summary-verdicts"' in first
    assert re.search(r"\d+ hold</span>", first) and "Central path (SPEC §9)" in first
    svg = (train_run / "figures" / "summary.svg").read_text()
    assert svg.count('id="axes_') == 6
    for title in ("Error", "L = L_NC1 + L_NC2/3 + L_⊥", "NC1: within-class variability",
                  "NC2–NC4 of the class means", "SNR spectrum", "Central path"):  # fmt: skip
        assert title in svg, title


@pytest.fixture(scope="module")
def run_figure_files(rendered) -> list:
    """Every figure of the full run, drawn again (with its checks) once for the module."""
    from ncmse.report.run_report import run_figures

    return run_figures(load_run(rendered[0]))


def test_no_text_of_any_run_figure_is_clipped(run_figure_files) -> None:
    """Every title, label, tick label and legend entry lies inside the saved image."""
    figures = run_figure_files
    assert {f.name for f in figures} == EXPECTED_TRAIN_FIGURES
    assert {f.name: f.clipped for f in figures if f.clipped} == {}


def test_no_legend_of_any_run_figure_covers_data(run_figure_files) -> None:
    """Every legend of the run figures (the summary and central path among them) lies outside
    every axes and its labels, and off the other legends."""
    figures = {f.name: f for f in run_figure_files}
    assert {n: f.legends_over_data for n, f in figures.items() if f.legends_over_data} == {}
    for name in ("summary", "central_path", "error", "snr"):
        assert figures[name].svg.read_text().count('id="legend_') >= 1, name


def test_central_path_figure_draws_the_fit_window_on_its_own_axis(rendered) -> None:
    """SPEC §9's fit uses only e ≥ e0: the bottom row draws that window against τ − τ(e0), so
    it fills the panel instead of the last part of the run's τ axis; the law starts from the
    measured ω at e0."""
    from ncmse.report.central_path_figure import ELAPSED_LABEL, draw_fit_window, omega_track
    from ncmse.verdicts.record import run_central_path

    run = load_run(rendered[0])
    fits, _ = run_central_path(run)
    track = omega_track(run)
    fig = layout_figure(5.0, 4.0)
    ax = fig.subplots()
    assert draw_fit_window(ax, track, fits[0], title="")
    start = track.start(fits[0])
    window = track.x[-1] - track.x[start]
    assert window < 0.85 * (track.x[-1] - track.x[0])  # the run is longer than the window
    low, high = ax.get_xlim()
    assert low <= 0.0 < high and high - low < 1.15 * window
    measured, law = ax.lines[0], ax.lines[1]
    assert measured.get_xdata()[0] == 0.0 and measured.get_xdata()[-1] == pytest.approx(window)
    assert law.get_xdata()[0] == 0.0 and law.get_ydata()[0] == pytest.approx(track.omega[start, 0])
    assert ax.get_xlabel() == ELAPSED_LABEL
    svg = (rendered[0] / "figures" / "central_path.svg").read_text()
    assert svg.count('id="axes_') == 5  # whole run: ω_j, ratio; window: 2 laws, ratio
    assert "τ − τ(e0)" in svg and "fit window" in svg


def test_clipped_text_is_detected() -> None:
    """Negative control of the clipping check: a title pushed off the left edge is reported."""
    fig, axes = new_figure()
    axes[0, 0].set_title("a long title that starts outside", x=-0.4)
    axes[0, 0].set_ylabel("fine")
    assert clipped_texts(fig) == ["a long title that starts outside"]


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        ({"loc": "center"}, "over the data of axes 'panel'"),
        ({"loc": "upper center", "bbox_to_anchor": (0.5, -0.02)}, "over 'time' of axes 'panel'"),
        ({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}, "over the data of axes 'other'"),
    ],
)
def test_a_legend_over_data_or_labels_is_detected(place, expected) -> None:
    """Negative controls of the legend check: a legend in the middle of the data, one on the
    x label, one on the neighbouring axes (a fixed layout, which makes no room for it);
    :func:`legend_below` in a constrained layout puts the same one outside."""
    fig, axes = new_figure(2, width=4.0, height=3.0)
    for a, title in zip(axes[0], ("panel", "other")):
        a.plot(np.arange(10), np.arange(10) ** 2, label="a long enough legend entry")
        a.set(title=title, xlabel="time", ylabel="value")
    axes[0, 0].legend(**place)
    assert any(expected in found for found in legends_over_data(fig)), legends_over_data(fig)
    fig = layout_figure(8.0, 4.0)
    axes = fig.subplots(1, 2)
    for a, title in zip(axes, ("panel", "other")):
        a.plot(np.arange(10), np.arange(10) ** 2, label="a long enough legend entry")
        a.set(title=title, xlabel="time", ylabel="value")
        legend_below(a)
    assert legends_over_data(fig) == []


def test_zeros_on_a_log_axis_are_drawn_at_a_marked_floor(rendered, tmp_path: Path) -> None:
    """nc4 = 0 after epoch 60 in the synthetic run: drawn at a floor with a note; a run without
    zeros gets no floor."""
    svg = (rendered[0] / "figures" / "summary.svg").read_text()
    assert "0 drawn at 10" in svg
    assert "marked floor" in rendered[1].read_text()
    assert log_floor([np.array([0.0, 0.0031, 0.5])]) == pytest.approx(1e-4)
    assert log_floor([np.array([0.0031, 0.5])]) is None
    assert log_floor([np.array([0.0, 0.0])]) is None


def test_final_metrics_table_has_train_and_test_values(rendered) -> None:
    train_run, report = rendered
    text = report.read_text()
    row = re.search(r"<tr><td>nc1</td>.*?</tr>", text).group(0)
    cells = re.findall(r'<td class="num">([^<]+)</td>', row)
    run = load_run(train_run)
    assert [float(c) for c in cells] == pytest.approx(
        [run.columns["nc1"][-1], run.columns["test_nc1"][-1]], rel=5e-3
    )


def test_figures_use_okabe_ito_and_spec_labels(rendered) -> None:
    train_run = rendered[0]
    assert (train_run / "figures" / "nc1.png").stat().st_mode & 0o777 != 0o600
    svg = (train_run / "figures" / "equinorm.svg").read_text().lower()
    assert OKABE_ITO["blue"].lower() in svg and OKABE_ITO["vermillion"].lower() in svg
    assert metric_label("nc1").startswith("nc1: Tr(Σ_W")
    assert metric_label("test_nc3").startswith("test_nc3: ")


def test_tpt_marked_only_when_known(tmp_path: Path) -> None:
    with_tpt = write_train_run(tmp_path / "a", keep=("train_error", "nc1"))
    summary = json.loads((with_tpt / "summary.json").read_text())
    write_run_report(with_tpt)
    assert "TPT (epoch 32)" in (with_tpt / "figures" / "nc1.svg").read_text()
    summary["tpt_epoch"] = None
    (with_tpt / "summary.json").write_text(json.dumps(summary))
    write_run_report(with_tpt)
    assert "TPT" not in (with_tpt / "figures" / "nc1.svg").read_text()


def test_missing_optional_columns_skip_panels(tmp_path: Path) -> None:
    drop = (
        "loss",
        "loss_nc1",
        "loss_nc23",
        "loss_perp",
        "loss_perp_ratio",
        "cdnv",
        "nc1_trace_ratio",
        "etf_error_means",
        "etf_error_wm",
        *(f"snr_{j}" for j in range(1, C)),
    )
    run_dir = write_train_run(
        tmp_path / "r", test=False, drop=drop, environment=False, epochs=EPOCHS[:20]
    )
    text = write_run_report(run_dir).read_text()
    made = {p.stem for p in (run_dir / "figures").glob("*.png")}
    assert made == EXPECTED_TRAIN_FIGURES - {
        "loss_decomposition",
        "snr",
        "central_path",
        "nc1_variants",
        "etf_error",
    }
    assert len(_embedded_images(text)) == len(made)
    assert "this machine, now" in text and "numpy" in text  # current environment


def test_all_zero_metric_drawn_on_linear_axis(tmp_path: Path) -> None:
    run_dir = write_train_run(tmp_path / "r", epochs=[60, 80, 100], keep=("nc4",))
    write_run_report(run_dir)  # nc4 is 0 at every epoch >= 60: must not fail on a log axis
    assert (run_dir / "figures" / "nc4.png").stat().st_size > 0


def test_run_without_rows_gets_a_page_without_figures(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("epoch,train_error,nc1\n")
    (run_dir / "summary.json").write_text(json.dumps({"kind": "train", "status": "running"}))
    text = write_run_report(run_dir).read_text()
    assert "no measurement yet" in text.lower() and not _embedded_images(text)


def test_inline_svg_embedding_has_unique_ids(train_run: Path) -> None:
    text = write_run_report(train_run, embed="svg").read_text()
    assert text.count("<svg") == 3 and not _embedded_images(text)
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'href="#([^"]+)"', text)) | set(re.findall(r"url\(#([^)]+)\)", text))
    assert refs and refs <= set(ids)


def test_bad_embed_mode_is_rejected(train_run: Path) -> None:
    with pytest.raises(InputError, match="embed='gif'"):
        write_run_report(train_run, embed="gif")


# --------------------------------------------------------------------------- UFM runs


def _write_ufm_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"kind": "ufm", "status": "finished"}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"n": 10, "C": 10, "steps": 100}))
    with (run_dir / "metrics.csv").open("w") as fh:
        fh.write(
            "t,flow,nc1,loss\n0,renormalized,1.0,0.5\n10,renormalized,0.1,0.3\n"
            "0,plain,2.0,0.6\n10,plain,0.5,0.4\n"
        )
    return run_dir


def test_ufm_run_without_omega_csv_draws_its_metric_figures(tmp_path: Path) -> None:
    run_dir = _write_ufm_run(tmp_path / "ufm")
    text = write_run_report(run_dir).read_text()
    assert len(_embedded_images(text)) == 2  # ufm_nc1 and ufm_nc234
    assert (run_dir / "figures" / "ufm_nc1.png").is_file()
    assert "flow: renormalized" in text and "flow: plain" in text
    assert 'href="metrics.csv"' in text


# --------------------------------------------------------------------------- several runs

ACCURACIES = {  # (dataset, model, loss) -> final test accuracy per seed
    ("mnist", "resnet18", "mse"): [0.991, 0.993],
    ("mnist", "resnet18", "ce"): [0.990, 0.986],
    ("mnist", "vgg11", "mse"): [0.989],
    ("mnist", "vgg11", "ce"): [0.988],
    ("cifar10", "resnet18", "mse"): [0.93],
    ("cifar10", "resnet18", "ce"): [0.925],
}


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for (dataset, model, loss), accs in ACCURACIES.items():
        for seed, acc in enumerate(accs):
            dirs.append(
                write_train_run(  # named as `ncmse sweep` names its runs
                    root / f"{dataset}-{model}-{loss}-s{seed}-lr0.05-wd0.0005",
                    dataset=dataset,
                    model=model,
                    loss=loss,
                    seed=seed,
                    test_accuracy=acc,
                    epochs=EPOCHS[::3],
                    keep=("train_error", "nc1", "test_accuracy", "loss", "loss_perp"),
                )
            )
    return dirs


def test_accuracy_table_mean_and_std_over_seeds(many_runs: list[Path]) -> None:
    cells = accuracy_table([load_run(d) for d in many_runs])
    keys = [("cifar10", "resnet18"), ("mnist", "resnet18"), ("mnist", "vgg11")]
    assert list(cells) == [(f"{d}/{m}", d, m) for d, m in keys]
    for (dataset, model, loss), accs in ACCURACIES.items():
        cell = cells[(f"{dataset}/{model}", dataset, model)][loss]
        assert cell.mean == pytest.approx(np.mean(accs))
        assert cell.std == pytest.approx(np.std(accs, ddof=1) if len(accs) > 1 else 0.0)
    assert cells[("mnist/resnet18", "mnist", "resnet18")]["mse"].text() == "99.2 ± 0.1 % (n = 2)"
    assert list(cells[("mnist/vgg11", "mnist", "vgg11")]) == ["mse", "ce"]


def test_accuracy_table_keeps_configurations_apart(tmp_path: Path) -> None:
    """Seeds are averaged only over runs whose configurations agree: a different weight decay
    on the same dataset/model is another row, not another seed."""
    dirs = [
        write_train_run(tmp_path / f"r{i}", seed=i, test_accuracy=acc, keep=("test_accuracy",))
        for i, acc in enumerate((0.90, 0.92, 0.50))
    ]
    config = yaml.safe_load((dirs[2] / "config.yaml").read_text())
    config["weight_decay"] = 5e-3
    (dirs[2] / "config.yaml").write_text(yaml.safe_dump(config))
    cells = accuracy_table([load_run(d) for d in dirs])
    assert len(cells) == 2
    by_wd = {label.split("weight_decay=")[1]: row["mse"] for (label, _, _), row in cells.items()}
    assert by_wd["0.0005"].values == (0.90, 0.92) and by_wd["0.005"].values == (0.50,)


@pytest.fixture(scope="module")
def comparison(many_runs: list[Path], tmp_path_factory) -> Path:
    """The comparison report of ``many_runs``, drawn once for the module."""
    return write_comparison_report(many_runs, tmp_path_factory.mktemp("cmp"))


def test_comparison_report(many_runs: list[Path], comparison: Path) -> None:
    out, report = comparison.parent, comparison
    text = report.read_text()
    figs = {p.stem for p in (out / "figures").glob("*.png")}
    assert figs == {
        *(f"grid_{m}" for m in ("train_error", "test_error", "nc1", "loss_perp_ratio")),
        *(f"overlay_{m}" for m in ("error", "nc1", "decomposition")),
    }
    assert {p.stem for p in (out / "figures").glob("*.svg")} == figs
    assert {p.stem for p in (out / "figures").glob("*.pdf")} == figs
    assert len(_embedded_images(text)) == len(figs)
    assert "99.2 ± 0.1 % (n = 2)" in text and "MSE − CE (points)" in text
    assert "+0.4<" in text  # mnist/resnet18: 99.20 − 98.80
    with (out / "accuracy_table.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(ACCURACIES)
    mse = next(
        r for r in rows if (r["dataset"], r["model"], r["loss"]) == ("mnist", "resnet18", "mse")
    )
    assert float(mse["test_accuracy_mean"]) == pytest.approx(0.992) and mse["runs"] == "2"
    rel = os.path.relpath(many_runs[0] / "metrics.csv", out)
    assert f'href="{Path(rel).as_posix()}"' in text
    assert 'href="accuracy_table.csv"' in text


def test_grid_uses_fixed_loss_colours(comparison: Path) -> None:
    svg = (comparison.parent / "figures" / "grid_nc1.svg").read_text().lower()
    assert LOSS_COLOURS["mse"].lower() in svg and LOSS_COLOURS["ce"].lower() in svg


def test_comparison_requires_runs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no run directory"):
        write_comparison_report([], tmp_path)


# --------------------------------------------------------------------------- CLI


def test_cli_single_and_several_runs(tmp_path: Path, capsys, monkeypatch) -> None:
    runs = [
        write_train_run(tmp_path / f"run{i}", loss=loss, keep=("train_error", "nc1"))
        for i, loss in enumerate(("mse", "ce"))
    ]
    assert main(["report", str(runs[0])]) == 0
    assert capsys.readouterr().out.strip() == str(runs[0].resolve() / "report.html")
    monkeypatch.chdir(tmp_path)
    assert main(["report", *map(str, runs), "--embed", "svg"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-1] == str((tmp_path / "ncmse-report" / "report.html").resolve())
    assert len(printed) == 3 and "<svg" in Path(printed[-1]).read_text()
    assert (runs[1] / "report.html").is_file()
    (runs[1] / "report.html").unlink()
    assert main(["report", *map(str, runs), "--out", "cmp", "--no-run-reports"]) == 0
    assert capsys.readouterr().out.split() == [str((tmp_path / "cmp" / "report.html").resolve())]
    assert not (runs[1] / "report.html").exists()


def test_cli_reports_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ncmse report: error:" in err and "not a run directory" in err


# --------------------------------------------------------------------------- browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

_CHECK_FIGURES = """
const out = [];
for (const el of document.querySelectorAll('figure img, figure > svg')) {
  const box = el.getBoundingClientRect();
  const holder = el.parentElement.getBoundingClientRect();
  out.push({tag: el.tagName.toLowerCase(), complete: el.tagName !== 'IMG' || el.complete,
            natural: el.tagName === 'IMG' ? el.naturalWidth : -1,
            width: box.width, height: box.height, container: holder.width,
            id: el.parentElement.id});
}
return out;
"""

#: Text blocks whose content is wider than their box (text overflow), tables wider than the
#: page (their ``table-wrap`` box scrolls sideways), and the page's own horizontal overflow;
#: ``pre`` scrolls by design and is left out.
_CHECK_TEXT = """
const out = [];
const blocks = 'p, li, h1, h2, h3, figcaption, aside, td, th, table, section, figure, .table-wrap';
for (const el of document.querySelectorAll(blocks)) {
  if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0) {
    out.push({tag: el.tagName.toLowerCase(), scroll: el.scrollWidth, client: el.clientWidth,
              text: el.textContent.slice(0, 80)});
  }
}
const doc = document.documentElement;
if (doc.scrollWidth > doc.clientWidth + 1) {
  out.push({tag: 'page', scroll: doc.scrollWidth, client: doc.clientWidth, text: ''});
}
return out;
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("python package selenium")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)} (apt: chromium chromium-driver)"
        if _in_ci():
            pytest.fail(f"CI is set, so the browser test must run, but: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_window_size(1280, 900)
    yield driver
    driver.quit()


def _open_and_check(driver, page: Path) -> list[dict]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop entries of earlier pages
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    return driver.execute_script(_CHECK_FIGURES)


def _screenshot(driver, path: Path) -> Path:
    """The whole page as a PNG (the window grown to the page's height, at most 16000 px)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 100, 16000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path


def _screenshot_dir(tmp_path: Path) -> Path:
    """``NCMSE_SCREENSHOT_DIR`` when set (to keep the screenshots and look at them), else tmp."""
    chosen = os.environ.get("NCMSE_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _problems(driver, page: Path, expected: int | None = None) -> list[str]:
    """What is wrong with ``page`` in the browser: missing images, images wider than their
    container, text overflowing its box, console errors."""
    figures = _open_and_check(driver, page)
    found = []
    if expected is not None and len(figures) != expected:
        found.append(f"{len(figures)} figures, expected {expected}")
    for fig in figures:
        if not (fig["complete"] and fig["width"] > 0 and fig["height"] > 0):
            found.append(f"figure not drawn: {fig}")
        if fig["tag"] == "img" and fig["natural"] <= 0:
            found.append(f"missing image (naturalWidth 0): {fig}")
        if fig["width"] > fig["container"] + 1:
            found.append(f"image wider than its container: {fig}")
    found += [f"text overflow: {t}" for t in driver.execute_script(_CHECK_TEXT)]
    found += [f"console: {e}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return found


def _assert_rendered(driver, page: Path, expected: int, shot: Path | None = None) -> None:
    problems = _problems(driver, page, expected)
    if shot is not None:
        _screenshot(driver, shot)
    assert not problems, problems


@pytest.mark.browser
def test_reports_render_in_headless_chromium(
    browser, rendered, train_run, comparison, tmp_path: Path
) -> None:
    """The run report (PNG and inline SVG) and the comparison report: every image drawn and
    inside its container, no text overflowing, no console error; screenshots of each page."""
    shots = _screenshot_dir(tmp_path)
    _assert_rendered(browser, rendered[1], len(EXPECTED_TRAIN_FIGURES), shots / "run.png")
    _assert_rendered(browser, write_run_report(train_run, embed="svg"), 3, shots / "run-svg.png")
    _assert_rendered(browser, comparison, 7, shots / "comparison.png")
    assert (shots / "run.png").stat().st_size > 10_000


@pytest.mark.browser
def test_browser_check_detects_a_broken_page(browser, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<figure><img src="missing.png" alt="x"></figure></body></html>'
    )
    figures = _open_and_check(browser, page)
    assert figures[0]["natural"] == 0
    assert any(e["level"] == "SEVERE" for e in browser.get_log("browser"))


@pytest.mark.browser
def test_browser_check_detects_overflow(browser, rendered, tmp_path: Path) -> None:
    """Negative controls of the layout checks: an image wider than its container, a word too
    long for its paragraph, a missing image; the real report has none of them."""
    png = (rendered[0] / "figures" / "nc1.png").resolve().as_uri()
    page = tmp_path / "overflow.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        f'<div style="width:300px"><figure><img src="{png}" style="width:900px"></figure>'
        '<p style="width:100px">' + "x" * 200 + "</p></div>"
        '<figure><img src="missing.png" alt="x"></figure></body></html>'
    )
    problems = _problems(browser, page)
    assert any(p.startswith("image wider than its container") for p in problems), problems
    assert any(p.startswith("text overflow") for p in problems), problems
    assert any(p.startswith("missing image") for p in problems), problems
    assert _problems(browser, rendered[1], len(EXPECTED_TRAIN_FIGURES)) == []
