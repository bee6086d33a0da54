"""Results of a sweep: final rows, mean ± std over seeds, the paper's learning-rate selection.

The learning-rate selection follows the paper (SPEC §6): per (preset, weight decay), the learning
rate whose final test error (1 − ``test_accuracy`` of the last measurement), averaged over seeds,
is lowest. A diverged seed counts as an infinite error, so a learning rate that diverges for any
seed is never chosen. Ties go to the smaller learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncmse.errors import NCMSEError
from ncmse.rundir.numfmt import plus_minus
from ncmse.rundir.reader import load_run, read_config
from ncmse.sweep.grid import RunSpec, preset_stem
from ncmse.sweep.state import read_summary
from ncmse.verdicts.claims import CLAIM_IDS, claims_are_current, outcome_of
from ncmse.verdicts.pairing import OUTCOMES, Pairing, RunEntry, current_claims, pair_runs
from ncmse.verdicts.pairing import seed_groups as pairing_seed_groups

__all__ = [
    "FINAL_KEYS",
    "format_table",
    "RunResult",
    "GroupStats",
    "collect",
    "claim_outcomes",
    "format_verdicts",
    "gap_columns",
    "sweep_pairing",
    "sweep_seed_groups",
    "format_groups",
    "format_selection",
    "group_results",
    "select_lr",
]

#: final-row values copied into the sweep manifest
FINAL_KEYS: tuple[str, ...] = (
    "epoch",
    "train_error",
    "accuracy",
    "test_accuracy",
    "objective",
    "test_objective",
    "loss",
    "test_loss",
    "nc1",
    "loss_perp",
    "loss_perp_ratio",
    "nc3",
    "nc4",
    "wall_time",
)


@dataclass(frozen=True)
class RunResult:
    """A run of the sweep and what its run directory says now."""

    run: RunSpec
    status: str  # "finished" | "diverged" | "running" | "missing"
    final: dict[str, Any]
    tpt_epoch: int | None = None
    #: SPEC §7 verdicts (summary.json ``claims``, else computed from the metrics file)
    claims: tuple[dict[str, Any], ...] = ()
    #: ``dataset``, ``model`` and ``loss`` of the run (summary.json, else config.yaml)
    describe: dict[str, Any] = field(default_factory=dict)
    #: the run directory's config.yaml (None when it has none)
    config: dict[str, Any] | None = None

    @property
    def test_error(self) -> float:
        """1 − final test accuracy; inf for a diverged run, NaN when unknown."""
        if self.status == "diverged":
            return math.inf
        acc = self.final.get("test_accuracy")
        if self.status != "finished" or not isinstance(acc, (int, float)):
            return math.nan
        return 1.0 - float(acc)

    @property
    def perp_ratio(self) -> float:
        """Final L_⊥ / L (NaN when unknown)."""
        ratio = self.final.get("loss_perp_ratio")
        if isinstance(ratio, (int, float)):
            return float(ratio)
        perp, loss = self.final.get("loss_perp"), self.final.get("loss")
        if isinstance(perp, (int, float)) and isinstance(loss, (int, float)) and loss > 0:
            return float(perp) / float(loss)
        return math.nan

    def to_dict(self) -> dict[str, Any]:
        """Manifest entry: coordinates, status, TPT epoch and the main final values."""
        out = self.run.coordinates()
        out["status"] = self.status
        out["tpt_epoch"] = self.tpt_epoch
        out["final"] = {k: self.final[k] for k in FINAL_KEYS if k in self.final}
        if self.claims:
            out["claims"] = {str(c.get("id")): c.get("holds") for c in self.claims}
            out["claim_outcomes"] = claim_outcomes(self.claims)
        return out


def collect(runs: Sequence[RunSpec]) -> list[RunResult]:
    """Read the ``summary.json`` of every run (and, for claims it lacks, its metrics file)."""
    results = []
    for run in runs:
        summary = read_summary(run.run_dir)
        if summary is None:
            results.append(RunResult(run, "missing", {}))
            continue
        final = summary.get("final") or {}
        status = str(summary.get("status", "running"))
        claims, describe = _claims_and_description(run, summary, status)
        config = read_config(run.run_dir, strict=False)
        results.append(
            RunResult(run, status, final, summary.get("tpt_epoch"), claims, describe, config)
        )
    return results


def _claims_and_description(
    run: RunSpec, summary: dict[str, Any], status: str
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """The run's verdicts and its dataset/model/loss, read through
    :func:`ncmse.rundir.reader.load_run`.

    Claims recorded in the current format are used as they are; a run that recorded none or
    recorded them in an older format gets them computed from its metrics file (runs that have
    not finished only when they recorded some); a run that cannot be read keeps no verdicts (the
    sweep still reports its other values).
    """
    describe = {k: summary.get(k) for k in ("dataset", "model")}
    describe["loss"] = summary.get("loss_name", summary.get("loss"))
    recorded = summary.get("claims")
    if claims_are_current(recorded):
        return tuple(c for c in recorded if isinstance(c, dict)), describe
    if status != "finished" and not recorded:
        return (), describe
    try:
        loaded = load_run(run.run_dir)
        claims, _ = current_claims(loaded)
        describe = {k: loaded.describe(k) for k in ("dataset", "model", "loss")}
    except (NCMSEError, OSError, ValueError):
        return (), describe
    return tuple(claims), describe


def _entries(results: Sequence[RunResult]) -> list[RunEntry]:
    return [
        RunEntry(
            name=r.run.name,
            loss=r.describe.get("loss"),
            config=r.config or None,
            status=r.status,
            test_accuracy=r.final.get("test_accuracy"),
            claims=r.claims,
            describe={**r.describe, "seed": r.run.seed},
        )
        for r in results
    ]


def sweep_pairing(results: Sequence[RunResult]) -> Pairing:
    """SPEC §7 claim 4 over the sweep: MSE and CE runs paired by
    :func:`ncmse.verdicts.pairing.pair_runs`
    (whole configurations equal but for the loss keys), claim 4 per group of paired seeds."""
    return pair_runs(_entries(results))


def sweep_seed_groups(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Runs of the sweep that differ only by seed, with "holds in k of n" per claim
    (:func:`ncmse.verdicts.pairing.seed_groups`)."""
    return pairing_seed_groups(_entries(results))


def claim_outcomes(claims: Sequence[dict[str, Any]] | None) -> dict[str, str]:
    """``{claim_id: outcome}`` in words (holds, fails, inconclusive, not applicable) for every
    id of :data:`ncmse.verdicts.claims.CLAIM_IDS`; a missing claim is inconclusive."""
    by_id = {str(c.get("id")): c for c in claims or ()}
    return {cid: outcome_of(by_id.get(cid, {})) for cid in CLAIM_IDS}


def gap_columns(pairing: Pairing) -> dict[str, dict[str, Any]]:
    """Run name → ``{"accuracy_gap": points of its pair, "accuracy_gap_outcome": claim 4 of its
    group of paired seeds}`` for every paired run."""
    verdicts = {str(g["group"]): outcome_of(g) for g in pairing.groups}
    out: dict[str, dict[str, Any]] = {}
    for pair in pairing.pairs:
        columns = {
            "accuracy_gap": pair.get("value"),
            "accuracy_gap_outcome": verdicts.get(str(pair.get("group")), ""),
        }
        out[pair["mse_run"]] = out[pair["ce_run"]] = columns
    return out


_MARKS = {"holds": "✓", "fails": "✗", "inconclusive": "?", "not applicable": "–"}


def _count_text(outcomes: Sequence[str]) -> str:
    return ", ".join(
        f"{outcomes.count(o)} {o}" for o in OUTCOMES if outcomes.count(o) or o in OUTCOMES[:2]
    )


def format_verdicts(
    results: Sequence[RunResult],
    pairing: Pairing,
    groups: Sequence[dict[str, Any]] = (),
) -> str:
    """Plain text: a mark per claim and run with the counts in words, "holds in k of n" per
    group of seeds, claim 4 per group of paired seeds with its interval and reason, and the runs
    that could not be paired with the reason."""
    by_run = gap_columns(pairing)
    header = ("run", *(f"{i + 1}" for i in range(len(CLAIM_IDS))), "outcomes", "MSE−CE pp")
    rows = []
    for r in results:
        if not r.claims:
            continue
        outcomes = claim_outcomes(r.claims)
        gap = by_run.get(r.run.name, {}).get("accuracy_gap")
        rows.append(
            (
                r.run.name,
                *(_MARKS[outcomes[cid]] for cid in CLAIM_IDS),
                _count_text(list(outcomes.values())),
                "—" if gap is None else f"{gap:+.3g}",
            )
        )
    parts = []
    if rows:
        legend = "  ".join(f"{i + 1}={cid}" for i, cid in enumerate(CLAIM_IDS))
        marks = "  ".join(f"{m} {o}" for o, m in _MARKS.items())
        parts.append(
            "claims (SPEC §7) per run — " + marks + ":\n" + format_table(header, rows)
            + "\nclaims: " + legend
        )  # fmt: skip
    several = [g for g in groups if g["n"] > 1]
    if several:
        lines = []
        for g in several:
            counts = g["claims"]
            cells = []
            for cid in CLAIM_IDS:
                c = counts[cid]
                rest = ", ".join(f"{c[o]} {o}" for o in OUTCOMES[1:] if c[o])
                cells.append(f"{cid} {c['holds']}/{g['n']}" + (f" ({rest})" if rest else ""))
            lines.append(f"{g['group']} (n = {g['n']}): holds in " + "; ".join(cells))
        parts.append("claims over seeds (holds in k of n runs):\n" + "\n".join(lines))
    if pairing.groups:
        gap_rows = []
        for g in pairing.groups:
            interval = g.get("interval")
            gap_rows.append(
                (
                    str(g["group"]),
                    str(g["n"]),
                    "—" if g.get("value") is None else f"{g['value']:+.3g}",
                    "—" if interval is None else f"[{interval[0]:+.3g}, {interval[1]:+.3g}]",
                    outcome_of(g),
                    str(g.get("reason") or ""),
                )
            )
        header4 = ("configuration", "pairs", "mean gap pp", "95 % interval", "claim 4", "reason")
        parts.append("MSE − CE test accuracy (claim 4):\n" + format_table(header4, gap_rows))
    if pairing.unpaired:
        lines = [f"  {u['run']} ({u['loss']}): {u['reason']}" for u in pairing.unpaired]
        parts.append("not paired for claim 4:\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value; NaN for none)."""
    if not values:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


@dataclass(frozen=True)
class GroupStats:
    """Seeds of one (preset, lr, wd): mean ± std of the final values over finished seeds."""

    preset: str
    lr: float
    weight_decay: float
    planned: int
    finished: int
    diverged: int
    test_accuracy: tuple[float, float]
    nc1: tuple[float, float]
    perp_ratio: tuple[float, float]
    test_error_mean: float

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (``*_mean`` / ``*_std`` keys); NaN/∞ as :mod:`ncmse.rundir.format` writes
        them."""
        out: dict[str, Any] = {
            "preset": self.preset,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "planned": self.planned,
            "finished": self.finished,
            "diverged": self.diverged,
            "mean_test_error": self.test_error_mean,
        }
        for name in ("test_accuracy", "nc1", "perp_ratio"):
            mean, std = getattr(self, name)
            key = "loss_perp_ratio" if name == "perp_ratio" else name
            out[f"{key}_mean"], out[f"{key}_std"] = mean, std
        return out


def group_results(results: Sequence[RunResult]) -> list[GroupStats]:
    """Group by (preset, lr, wd) in first-seen order and average over seeds."""
    groups: dict[tuple[str, float, float], list[RunResult]] = {}
    for r in results:
        groups.setdefault((preset_stem(r.run.preset), r.run.lr, r.run.weight_decay), []).append(r)
    out = []
    for (preset, lr, wd), members in groups.items():
        done = [r for r in members if r.status == "finished"]
        diverged = sum(r.status == "diverged" for r in members)
        errors = [r.test_error for r in done if not math.isnan(r.test_error)]
        acc = [1.0 - e for e in errors]
        nc1 = [float(r.final["nc1"]) for r in done if isinstance(r.final.get("nc1"), (int, float))]
        perp = [r.perp_ratio for r in done if not math.isnan(r.perp_ratio)]
        if diverged:
            err_mean = math.inf
        else:
            err_mean = float(np.mean(errors)) if errors else math.nan
        out.append(
            GroupStats(
                preset=preset,
                lr=lr,
                weight_decay=wd,
                planned=len(members),
                finished=len(done),
                diverged=diverged,
                test_accuracy=_mean_std(acc),
                nc1=_mean_std(nc1),
                perp_ratio=_mean_std(perp),
                test_error_mean=err_mean,
            )
        )
    return out


def select_lr(groups: Sequence[GroupStats]) -> list[dict[str, Any]]:
    """Per (preset, wd), the lr with the lowest mean final test error.

    Returns
    -------
    list of dict
        One entry per (preset, weight_decay): ``best_lr`` (None when no lr has a finished run),
        ``best_test_error``, ``complete`` (every planned run of every lr finished or diverged)
        and ``candidates`` (lr, mean test error, finished/planned seeds), sorted by lr.
    """
    by_key: dict[tuple[str, float], list[GroupStats]] = {}
    for g in groups:
        by_key.setdefault((g.preset, g.weight_decay), []).append(g)
    selections = []
    for (preset, wd), members in by_key.items():
        usable = [g for g in members if not math.isnan(g.test_error_mean)]
        best = min(usable, key=lambda g: (round(g.test_error_mean, 12), g.lr), default=None)
        if best is not None and math.isinf(best.test_error_mean):
            best = None
        complete = all(g.finished + g.diverged == g.planned for g in members)
        selections.append(
            {
                "preset": preset,
                "weight_decay": wd,
                "best_lr": None if best is None else best.lr,
                "best_test_error": None if best is None else best.test_error_mean,
                "complete": complete,
                "candidates": [
                    {
                        "lr": g.lr,
                        "mean_test_error": g.test_error_mean,
                        "finished": g.finished,
                        "diverged": g.diverged,
                        "planned": g.planned,
                    }
                    for g in sorted(members, key=lambda g: g.lr)
                ],
            }
        )
    return selections


def _pm(pair: tuple[float, float], scale: float = 1.0) -> str:
    """``mean ± std`` in the one number format (:mod:`ncmse.rundir.numfmt`)."""
    return plus_minus(*pair, scale=scale)


def format_groups(groups: Sequence[GroupStats]) -> str:
    """Plain-text table: preset, lr, wd, seeds, test accuracy %, nc1, L_⊥/L (mean ± std)."""
    header = ("preset", "lr", "wd", "seeds", "test acc %", "nc1", "L_perp/L")
    rows = [
        (
            g.preset,
            f"{g.lr:g}",
            f"{g.weight_decay:g}",
            f"{g.finished}/{g.planned}" + (f" ({g.diverged} diverged)" if g.diverged else ""),
            _pm(g.test_accuracy, 100.0),
            _pm(g.nc1),
            _pm(g.perp_ratio),
        )
        for g in groups
    ]
    return format_table(header, rows)


def format_selection(selections: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of the selected learning rates."""
    header = ("preset", "wd", "best lr", "mean test error", "complete")
    rows = [
        (
            s["preset"],
            f"{s['weight_decay']:g}",
            "—" if s["best_lr"] is None else f"{s['best_lr']:g}",
            "—" if s["best_test_error"] is None else f"{s['best_test_error']:.3g}",
            "yes" if s["complete"] else "no",
        )
        for s in selections
    ]
    return format_table(header, rows)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
