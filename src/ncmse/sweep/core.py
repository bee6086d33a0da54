"""Plan, execute and collect a sweep in ``SWEEP_DIR``.

Layout of a sweep directory::

    SWEEP_DIR/
      runs/<preset>-s<seed>-lr<lr>-wd<wd>/   run directories of ncmse train
      logs/<run name>.log                     output of each training process (appended)
      submitit/<job id>/                      submitit's files (executors local/slurm/debug)
      sweep.json                              manifest: spec, command, every run and its status,
                                              mean ± std per (preset, lr, wd)
      results.csv                             one row per run: coordinates, status, final values
      lr_selection.json                       with --select-lr / --lr-grid
      report/report.html                      comparison report (drawn by ncmse.report, asked for
                                              by the CLI after the sweep; named in sweep.json)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ncmse.errors import BusyError, ConfigError, sigterm_raises
from ncmse.rundir.atomic import atomic_write_text
from ncmse.rundir.format import parse_json, rows_to_csv, table_cell
from ncmse.rundir.lock import DirLock, holder
from ncmse.rundir.writer import write_json
from ncmse.sweep.collect import (
    FINAL_KEYS,
    RunResult,
    claim_outcomes,
    collect,
    format_groups,
    format_selection,
    format_table,
    format_verdicts,
    gap_columns,
    group_results,
    select_lr,
    sweep_pairing,
    sweep_seed_groups,
)
from ncmse.sweep.execute import (
    TO_RUN,
    JobOutcome,
    SlurmOptions,
    TrainJob,
    make_executor,
    run_local,
    shell_command,
    submit_jobs,
    train_argv,
)
from ncmse.sweep.grid import RunSpec, SweepSpec, expand
from ncmse.sweep.pack import PackJob, group_packs, pack_job
from ncmse.sweep.state import config_differences, read_summary, run_state
from ncmse.verdicts.claims import CLAIM_IDS
from ncmse.verdicts.pairing import Pairing

__all__ = [
    "EXECUTORS",
    "PlannedRun",
    "SweepLock",
    "SweepOptions",
    "SweepTerminated",
    "finished_run_dirs",
    "format_plan",
    "plan",
    "record_report",
    "run_sweep",
]

#: ``subprocess``: here, one run after the other; the others go through submitit
EXECUTORS: tuple[str, ...] = ("subprocess", "local", "slurm", "debug")
#: SLURM job states in which a run must not be submitted again
_ACTIVE_SLURM_STATES: frozenset[str] = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}
)
_MANIFEST = "sweep.json"


@dataclass
class SweepOptions:
    """How to execute a sweep.

    Attributes
    ----------
    out : Path
        The sweep directory.
    executor : str
        One of :data:`EXECUTORS`.
    slurm : SlurmOptions
        Job resources (executors local/slurm/debug).
    wait : bool or None
        Wait for submitted jobs; None: wait unless the executor is slurm.
    dry_run : bool
        Print the plan only.
    print_commands : bool
        Print the training command of every run that needs one.
    python : str
        Interpreter of the training processes.
    command : list of str
        The command line, recorded in the manifest.
    pack : int
        Train up to this many compatible runs together in one process
        (:mod:`ncmse.sweep.pack`); 1 trains each run in its own process.
    """

    out: Path
    executor: str = "subprocess"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    wait: bool | None = None
    dry_run: bool = False
    print_commands: bool = False
    python: str = sys.executable
    command: list[str] = field(default_factory=list)
    pack: int = 1

    @property
    def waits(self) -> bool:
        """Whether the sweep blocks until every run has ended."""
        if self.executor == "subprocess":
            return True
        return self.wait if self.wait is not None else self.executor != "slurm"

    @property
    def gpus(self) -> int:
        """GPUs per job (0 for subprocess and debug runs, which use what they find)."""
        return self.slurm.gpus if self.executor in ("slurm", "local") else 0


@dataclass(frozen=True)
class PlannedRun:
    """A run with the state it is in before the sweep acts."""

    run: RunSpec
    state: str
    job_id: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_manifest(out: Path) -> dict[str, Any]:
    """``SWEEP_DIR/sweep.json`` or an empty dict."""
    try:
        data = parse_json((out / _MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def finished_run_dirs(out: Path) -> list[Path]:
    """Directories of the runs that ``SWEEP_DIR/sweep.json`` lists as finished, in its order."""
    runs = _read_manifest(Path(out)).get("runs", [])
    return [
        Path(r["run_dir"])
        for r in runs
        if isinstance(r, dict) and r.get("status") == "finished" and r.get("run_dir")
    ]


def record_report(out: Path, report: str | None) -> None:
    """Name the comparison report (its path; None when none was drawn) in ``sweep.json``.

    Holds the sweep lock while it rewrites the manifest, as the sweep itself does.
    """
    out = Path(out)
    with SweepLock(out):
        manifest = _read_manifest(out)
        if manifest:
            manifest["report"] = report
            _write_json(out / _MANIFEST, manifest)


def _submitted_jobs(out: Path) -> dict[str, str]:
    """Run name -> SLURM job id of runs an earlier call submitted without waiting."""
    manifest = _read_manifest(out)
    if manifest.get("executor") != "slurm":
        return {}
    return {
        r["name"]: str(r["job_id"])
        for r in manifest.get("runs", [])
        if r.get("outcome") == "submitted" and r.get("job_id")
    }


def _active_slurm_jobs(out: Path, jobs: dict[str, str]) -> set[str]:
    """Names whose earlier SLURM job is still pending or running (needs ``sacct``)."""
    if not jobs:
        return set()
    try:
        import submitit
    except ImportError:
        return set()
    active = set()
    for name, job_id in jobs.items():
        try:
            state = submitit.SlurmJob(folder=str(out / "submitit" / "%j"), job_id=job_id).state
        except Exception:  # noqa: BLE001 - no SLURM here: the job cannot be active
            continue
        if str(state).upper() in _ACTIVE_SLURM_STATES:
            active.add(name)
    return active


def plan(spec: SweepSpec, out: str | os.PathLike[str]) -> list[PlannedRun]:
    """Expand ``spec`` and find the state of each run directory under ``out``."""
    root = Path(out).expanduser().resolve()
    runs = expand(spec, root)
    jobs = _submitted_jobs(root)
    queued = _active_slurm_jobs(root, {r.name: jobs[r.name] for r in runs if r.name in jobs})
    planned = []
    for run in runs:
        state = run_state(run.run_dir, run.config)
        if run.name in queued and state != "done":
            planned.append(PlannedRun(run, "queued", jobs[run.name]))
        else:
            planned.append(PlannedRun(run, state))
    return planned


def format_plan(planned: Sequence[PlannedRun]) -> str:
    """The plan as a table (run, preset, seed, lr, wd, state) and a count per state."""
    header = ("run", "preset", "seed", "lr", "wd", "state")
    rows = [
        (
            p.run.name,
            p.run.preset,
            str(p.run.seed),
            f"{p.run.lr:g}",
            f"{p.run.weight_decay:g}",
            p.state,
        )
        for p in planned
    ]
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.state] = counts.get(p.state, 0) + 1
    tally = ", ".join(f"{n} {state}" for state, n in counts.items())
    return f"{format_table(header, rows)}\n{len(planned)} runs: {tally}"


def _check_mismatches(planned: Sequence[PlannedRun]) -> None:
    bad = [p for p in planned if p.state == "mismatch"]
    if not bad:
        return
    lines = [
        f"  {p.run.run_dir}: {', '.join(config_differences(p.run.config, p.run.run_dir))}"
        for p in bad
    ]
    raise ConfigError(
        "these run directories hold runs of a different config (keys that differ):\n"
        + "\n".join(lines)
        + "\nuse another --out, the --set values of the earlier sweep, or delete them"
    )


class SweepLock:
    """``flock`` on ``SWEEP_DIR/.sweep.lock`` (:mod:`ncmse.rundir.lock`), so two sweeps never share
    a
    directory; the kernel frees it when the sweep ends, however it ends."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".sweep.lock"
        self._lock = DirLock(out, "sweep directory", lock_name=self.path.name)

    def __enter__(self) -> SweepLock:
        try:
            self._lock.acquire()
        except BusyError as exc:
            raise BusyError(f"another ncmse sweep: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _job(run: RunSpec, options: SweepOptions) -> TrainJob:
    log = options.out / "logs" / f"{run.name}.log"
    return TrainJob(run=run, log_path=log, python=options.python, gpus=options.gpus)


def _outcome_after(run: RunSpec, outcome: JobOutcome) -> JobOutcome:
    """Trust the run directory: finished / diverged / failed."""
    state = run_state(run.run_dir)
    if state == "done":
        outcome.status = "finished"
    elif state == "diverged":
        outcome.status = "diverged"
    elif state == "busy":
        outcome.status, outcome.error = "busy", _busy_message(run)
    elif outcome.status != "submitted":
        outcome.status = "failed"
    return outcome


def _busy_message(run: RunSpec) -> str:
    info = holder(run.run_dir) or {}
    who = f"pid {info['pid']} ({info.get('command', '?')})" if "pid" in info else "another process"
    return (
        f"{run.run_dir} is in use by {who}, e.g. the trainer of an earlier, killed sweep: "
        "skipped; run the sweep again when it has ended (or kill it)"
    )


def _describe(run: RunSpec, outcome: JobOutcome) -> str:
    summary = read_summary(run.run_dir) or {}
    final = summary.get("final") or {}
    parts = [outcome.status]
    if outcome.seconds is not None:
        parts.append(f"in {outcome.seconds:.1f} s")
    if outcome.status == "finished" and isinstance(final.get("test_accuracy"), (int, float)):
        parts.append(f"(test accuracy {100 * final['test_accuracy']:.3g} %)")
    if outcome.error and outcome.status != "finished":
        parts.append(f"- {outcome.error}")
    return " ".join(parts)


def _jobs(todo: Sequence[PlannedRun], options: SweepOptions) -> list[TrainJob | PackJob]:
    """One job per run, or with ``options.pack > 1`` one per pack of compatible runs."""
    if options.pack <= 1:
        return [_job(p.run, options) for p in todo]
    packs = group_packs([p.run for p in todo], options.pack)
    return [
        _job(runs[0], options) if len(runs) == 1 else pack_job(runs, options.out, options.python)
        for runs in packs
    ]


def _runs_of(job: TrainJob | PackJob) -> tuple[RunSpec, ...]:
    return job.runs if isinstance(job, PackJob) else (job.run,)


def _label(job: TrainJob | PackJob) -> str:
    runs = _runs_of(job)
    if len(runs) == 1:
        return runs[0].name
    return f"pack of {len(runs)} ({', '.join(r.name for r in runs)})"


def _execute_subprocess(
    todo: Sequence[PlannedRun],
    options: SweepOptions,
    stream: TextIO,
    outcomes: dict[str, JobOutcome],
) -> None:
    """Run ``todo`` one job after the other here; ``outcomes`` is filled as runs end."""
    states = {p.run.name: p.state for p in todo}
    jobs = _jobs(todo, options)
    for i, job in enumerate(jobs, 1):
        runs = _runs_of(job)
        what = ", ".join(sorted({states[r.name] for r in runs}))
        print(f"[{i}/{len(jobs)}] {_label(job)}: {what} ...", file=stream, flush=True)
        raw = run_local(job)
        for run in runs:
            outcome = _outcome_after(run, dataclasses.replace(raw))
            outcomes[run.name] = outcome
            print(
                f"[{i}/{len(jobs)}] {run.name}: {_describe(run, outcome)}", file=stream, flush=True
            )


def _execute_submitit(
    todo: Sequence[PlannedRun],
    options: SweepOptions,
    stream: TextIO,
    outcomes: dict[str, JobOutcome],
) -> None:
    """Submit ``todo`` through submitit; ``outcomes`` is filled as jobs end or are submitted."""
    executor = make_executor(
        options.executor, options.out / "submitit", options.slurm, f"ncmse-{options.out.name}"
    )
    jobs = _jobs(todo, options)

    def report(job: TrainJob | PackJob, raw: JobOutcome) -> None:
        for run in _runs_of(job):
            outcome = _outcome_after(run, dataclasses.replace(raw))
            outcomes[run.name] = outcome
            print(
                f"{run.name}: job {outcome.job_id} {_describe(run, outcome)}",
                file=stream,
                flush=True,
            )

    parallel = (
        options.slurm.parallel if options.executor == "slurm" else options.slurm.parallel or 1
    )
    submitted = submit_jobs(jobs, executor, wait=options.waits, parallel=parallel, on_done=report)
    if not options.waits:
        for job, outcome in zip(jobs, submitted):
            for run in _runs_of(job):
                outcomes[run.name] = dataclasses.replace(outcome)
                print(f"{run.name}: submitted as job {outcome.job_id}", file=stream)


def _results_csv(results: Sequence[RunResult], pairing: Pairing | None = None) -> str:
    """One row per run: coordinates, status, final values, ``lr_final``, ``claim_<id>`` outcomes
    in words (holds, fails, inconclusive, not applicable; empty when the run has no verdicts),
    the MSE − CE ``accuracy_gap`` (points) of its pair and ``accuracy_gap_outcome``, claim 4 of
    its group of paired seeds."""
    columns = ["name", "preset", "seed", "lr", "weight_decay", "status", "tpt_epoch", *FINAL_KEYS]
    columns.append("lr_final")
    columns += [f"claim_{cid}" for cid in CLAIM_IDS]
    columns += ["accuracy_gap", "accuracy_gap_outcome"]
    by_run = gap_columns(pairing) if pairing is not None else {}
    rows = []
    for r in results:
        # ``lr`` is the configured learning rate; the final row's (decayed) one is ``lr_final``
        final = {k: v for k, v in r.final.items() if k not in ("lr", "weight_decay")}
        row = {**final, **r.run.coordinates(), "status": r.status, "tpt_epoch": r.tpt_epoch}
        row["lr_final"] = r.final.get("lr")
        if r.claims:
            row.update({f"claim_{k}": v for k, v in claim_outcomes(r.claims).items()})
        row.update({k: table_cell(v) for k, v in by_run.get(r.run.name, {}).items()})
        rows.append(row)
    return rows_to_csv(rows, columns)


def _manifest(
    spec: SweepSpec,
    options: SweepOptions,
    planned: Sequence[PlannedRun],
    outcomes: dict[str, JobOutcome],
    results: Sequence[RunResult],
) -> dict[str, Any]:
    entries = []
    for p, r in zip(planned, results):
        entry = r.to_dict()
        entry["state_before"] = p.state
        outcome = outcomes.get(p.run.name)
        if outcome is not None:
            entry["outcome"] = outcome.status
            entry.update({k: v for k, v in outcome.to_dict().items() if k != "status"})
        elif p.job_id is not None:
            entry["outcome"], entry["job_id"] = "submitted", p.job_id
        entries.append(entry)
    return {
        "kind": "sweep",
        "updated": _now(),
        "command": options.command,
        "executor": options.executor,
        "pack": options.pack,
        "spec": spec.to_dict(),
        "runs": entries,
        "groups": [g.to_dict() for g in group_results(results)],
        **_verdicts_manifest(results),
    }


def _verdicts_manifest(results: Sequence[RunResult]) -> dict[str, Any]:
    """``claim_groups`` (holds in k of n per group of seeds), ``accuracy_gaps`` (MSE–CE pairs),
    ``accuracy_gap_groups`` (claim 4 per group of paired seeds) and ``unpaired`` runs."""
    pairing = sweep_pairing(results)
    return {
        "claim_groups": sweep_seed_groups(results),
        "accuracy_gaps": pairing.pairs,
        "accuracy_gap_groups": pairing.groups,
        "unpaired": pairing.unpaired,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data)


def _finish(
    spec: SweepSpec,
    options: SweepOptions,
    planned: Sequence[PlannedRun],
    outcomes: dict[str, JobOutcome],
    stream: TextIO,
) -> None:
    """Collect, print the tables and write manifest, results.csv and the lr selection."""
    out = options.out
    results = collect([p.run for p in planned])
    groups = group_results(results)
    manifest = _manifest(spec, options, planned, outcomes, results)
    pairing = Pairing(
        manifest["accuracy_gaps"], manifest["unpaired"], manifest["accuracy_gap_groups"]
    )
    atomic_write_text(out / "results.csv", _results_csv(results, pairing))
    _write_json(out / _MANIFEST, manifest)
    print("\nfinal values, mean ± std over seeds:\n" + format_groups(groups), file=stream)
    verdicts = format_verdicts(results, pairing, manifest["claim_groups"])
    if verdicts:
        print("\n" + verdicts, file=stream)
    if spec.select_lr:
        selections = select_lr(groups)
        _write_json(
            out / "lr_selection.json",
            {
                "criterion": "lowest final test error (1 - test_accuracy), mean over seeds; "
                "a diverged seed counts as infinite error; ties go to the smaller lr",
                "selections": selections,
            },
        )
        manifest["lr_selection"] = "lr_selection.json"
        print("\nselected learning rates:\n" + format_selection(selections), file=stream)
    _write_json(out / _MANIFEST, manifest)
    print(f"manifest: {out / _MANIFEST}", file=stream)


def _print_commands(planned: Sequence[PlannedRun], options: SweepOptions, stream: TextIO) -> None:
    for p in planned:
        if p.state in TO_RUN:
            argv = train_argv(p.run, p.state, python=options.python, gpus=options.gpus)
            print(shell_command(argv), file=stream)


class SweepTerminated(KeyboardInterrupt):
    """SIGTERM received: stop the current training process, write the manifest, exit."""


def run_sweep(spec: SweepSpec, options: SweepOptions, *, stream: TextIO | None = None) -> int:
    """Plan the sweep, run or submit what is not done, collect the results.

    Returns
    -------
    int
        0 when every run finished (or diverged, a result) or was submitted; 1 if any failed
        or was skipped because another process writes its directory (``busy``).

    Raises
    ------
    ConfigError
        For an invalid sweep, an unknown executor, a run directory holding another config, or
        a sweep directory in use by another ``ncmse sweep``.
    """
    stream = sys.stdout if stream is None else stream
    if options.executor not in EXECUTORS:
        raise ConfigError(f"--executor {options.executor!r} is unknown; choose one of {EXECUTORS}")
    if isinstance(options.pack, bool) or not isinstance(options.pack, int) or options.pack < 1:
        raise ConfigError(f"--pack must be a positive integer, got {options.pack!r}")
    if options.pack > 1 and options.gpus > 1:
        raise ConfigError(
            f"--pack {options.pack} trains runs together in one process on one device; it "
            f"cannot be combined with --gpus {options.gpus} (torchrun). Use one of them"
        )
    options.out = Path(options.out).expanduser().resolve()
    planned = plan(spec, options.out)
    print(format_plan(planned), file=stream)
    if options.print_commands:
        _print_commands(planned, options, stream)
    if options.dry_run:
        return 0
    _check_mismatches(planned)
    todo = [p for p in planned if p.state in TO_RUN]
    with SweepLock(options.out), sigterm_raises(SweepTerminated):
        outcomes: dict[str, JobOutcome] = {}
        for p in planned:
            if p.state == "busy":
                outcomes[p.run.name] = JobOutcome("busy", error=_busy_message(p.run))
                print(f"{p.run.name}: {outcomes[p.run.name].error}", file=stream, flush=True)
        try:
            if todo and options.executor == "subprocess":
                _execute_subprocess(todo, options, stream, outcomes)
            elif todo:
                _execute_submitit(todo, options, stream, outcomes)
        finally:
            _finish(spec, options, planned, outcomes, stream)
    return 1 if any(o.status in ("failed", "busy") for o in outcomes.values()) else 0
