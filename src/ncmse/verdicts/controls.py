"""Positive and negative controls of the SPEC §7 verdicts on real training runs.

The verdict code is a classifier of runs, and is validated like one (SPEC §7 *Controls*):

* **positive** controls collapse, and must hold every claim that applies to them: the default
  preset (``digits-mlp-mse``) and its cross-entropy twin (``digits-mlp-ce``, where the L_⊥
  claims do not apply);
* **negative** controls do not collapse, and must hold none of the trend claims of
  :data:`NEGATIVE_CLAIMS`: the default preset with a learning rate 1000× too small, the default
  preset stopped after 3 epochs, and the default preset with its features frozen at
  initialisation (``freeze_features``: only the classifier trains).

:func:`run_controls` trains them (one run directory each) and :func:`controls_table` prints the
outcome of every claim per control. The controls *separate* when no negative control holds a
trend claim; a positive control that fails a claim is a finding to report, not a reason to move a
threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncmse.errors import ConfigError
from ncmse.verdicts.claims import CLAIM_IDS, TREND_CLAIMS, outcome_of

__all__ = [
    "CONTROLS",
    "NEGATIVE_CLAIMS",
    "Control",
    "ControlResult",
    "controls_separate",
    "controls_table",
    "run_controls",
    "summary_lines",
]

#: trend claims no negative control may hold (SPEC §7 *Controls*)
NEGATIVE_CLAIMS: tuple[str, ...] = TREND_CLAIMS
#: settings of every control run: no console lines, no report, no TensorBoard, no test split
_QUIET = ("quiet=true", "report=false", "tensorboard=false", "measure_test=false")


@dataclass(frozen=True)
class Control:
    """One control run: a preset with ``--set`` overrides, and whether it should collapse."""

    name: str
    positive: bool
    preset: str
    overrides: tuple[str, ...]
    description: str


#: the controls, positive first
CONTROLS: tuple[Control, ...] = (
    Control("default", True, "digits-mlp-mse", (), "the default preset (MSE)"),
    Control("ce-twin", True, "digits-mlp-ce", (), "its cross-entropy twin"),
    Control(
        "lr-1000x-small",
        False,
        "digits-mlp-mse",
        ("lr=0.0001",),
        "the default preset at lr 1e-4 (1000× too small)",
    ),  # fmt: skip
    Control("3-epochs", False, "digits-mlp-mse", ("epochs=3",), "the default preset, 3 epochs"),
    Control(
        "frozen-features",
        False,
        "digits-mlp-mse",
        ("freeze_features=true",),
        "the default preset, only the classifier trains",
    ),  # fmt: skip
)


@dataclass(frozen=True)
class ControlResult:
    """A control and the claims of its run."""

    control: Control
    run_dir: Path
    claims: tuple[dict[str, Any], ...]

    def outcomes(self) -> dict[str, str]:
        """``{claim id: outcome}`` (:func:`ncmse.verdicts.claims.outcome_of`)."""
        return {str(c.get("id")): outcome_of(c) for c in self.claims}

    def failures(self) -> list[str]:
        """What contradicts the control's expectation: claims a negative control holds, or
        claims that apply to a positive control and do not hold."""
        outcomes = self.outcomes()
        if self.control.positive:
            return [cid for cid, o in outcomes.items() if o not in ("holds", "not applicable")]
        return [cid for cid in NEGATIVE_CLAIMS if outcomes.get(cid) == "holds"]


def run_controls(
    out: str | Path,
    *,
    names: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> list[ControlResult]:
    """Train the controls into ``out/<name>`` and return their claims.

    Parameters
    ----------
    out : path
        Parent directory of the control runs (each run directory is replaced if it exists).
    names : sequence of str, optional
        Only these controls (default: all of :data:`CONTROLS`).
    overrides : sequence of str
        Extra ``key=value`` settings for every control (e.g. ``device=cpu``).
    progress : callable, optional
        Called with one line before each run.

    Raises
    ------
    ConfigError
        For an unknown control name (or an invalid override).
    """
    from ncmse.train.config import resolve_config  # lazy: `ncmse controls --help` loads no torch
    from ncmse.train.run import run_training

    chosen = _chosen(names, ConfigError)
    configs = [
        resolve_config(c.preset, [*_QUIET, *c.overrides, *overrides]) for c in chosen
    ]  # every config is validated before the first run starts
    results = []
    for control, cfg in zip(chosen, configs):
        if progress is not None:
            progress(f"control {control.name}: {control.description}")
        run_dir = Path(out) / control.name
        _, summary = run_training(cfg, run_dir, overwrite=run_dir.exists())
        results.append(ControlResult(control, run_dir, tuple(summary.get("claims") or ())))
    return results


def _chosen(names: Sequence[str] | None, error: type[Exception]) -> list[Control]:
    if not names:
        return list(CONTROLS)
    known = {c.name: c for c in CONTROLS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise error(
            f"unknown control(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}"
        )
    return [known[n] for n in names]


def controls_separate(results: Sequence[ControlResult]) -> bool:
    """Whether no negative control holds a trend claim of :data:`NEGATIVE_CLAIMS`."""
    return not any(r.failures() for r in results if not r.control.positive)


_MARK = {"holds": "holds", "fails": "fails", "inconclusive": "inconcl.", "not applicable": "n/a"}


def controls_table(results: Sequence[ControlResult]) -> str:
    """A text table: one row per control, one column per claim, and what contradicts it."""
    header = ["control", "kind", *CLAIM_IDS, "contradicting"]
    rows = []
    for r in results:
        outcomes = r.outcomes()
        rows.append(
            [r.control.name, "positive" if r.control.positive else "negative",
             *(_MARK.get(outcomes.get(cid, ""), "—") for cid in CLAIM_IDS),
             ", ".join(r.failures()) or "none"]
        )  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in (header, *rows)]  # fmt: skip
    return "\n".join(lines)


def summary_lines(results: Sequence[ControlResult]) -> list[str]:
    """The verdict on the controls, in words (last lines of ``ncmse controls``)."""
    lines = []
    for r in results:
        failed = r.failures()
        if failed and r.control.positive:
            lines.append(
                f"finding: positive control {r.control.name} does not hold "
                f"{', '.join(failed)} ({_reasons(r.claims, failed)})"
            )
        elif failed:
            lines.append(
                f"negative control {r.control.name} holds {', '.join(failed)} "
                f"({_reasons(r.claims, failed)})"
            )
    if controls_separate(results):
        lines.append("controls separate: no negative control holds a trend claim")
    else:
        lines.append("controls do not separate: a negative control holds a trend claim")
    return lines


def _reasons(claims: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> str:
    by_id = {str(c.get("id")): c for c in claims}
    return "; ".join(f"{cid}: {by_id.get(cid, {}).get('reason', '')}" for cid in ids)
