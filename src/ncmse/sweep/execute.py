"""Running the runs of a sweep: one subprocess each, locally or in a submitit job.

Every run is ``python -m ncmse train ...`` in its own process (``torchrun`` when a job has
several GPUs), so a crash or a kill of one run never takes the sweep down. The same
:class:`TrainJob` decides at start time whether to start, restart or resume its run; a SLURM job
requeued after a timeout therefore resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncmse.errors import ConfigError
from ncmse.sweep.grid import RunSpec
from ncmse.sweep.state import read_summary, run_state

__all__ = [
    "TO_RUN",
    "TrainFailedError",
    "make_executor",
    "run_local",
    "run_logged",
    "shell_command",
    "JobOutcome",
    "SlurmOptions",
    "TrainJob",
    "parse_time_minutes",
    "submit_jobs",
    "train_argv",
]

#: the states of a run that need a training process
TO_RUN: frozenset[str] = frozenset({"new", "restart", "resume"})


def train_argv(
    run: RunSpec,
    state: str,
    *,
    python: str = sys.executable,
    gpus: int = 0,
) -> list[str]:
    """The command line that brings ``run`` from ``state`` to finished.

    Parameters
    ----------
    run : RunSpec
        The run.
    state : {"new", "restart", "resume"}
        Its current state (see :mod:`ncmse.sweep.state`).
    python : str
        Interpreter to use.
    gpus : int
        More than 1: launch through ``torchrun --standalone --nproc_per_node=gpus``.
    """
    if state not in TO_RUN:
        raise ValueError(f"state {state!r} needs no training process")
    if gpus > 1:
        launcher = [python, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={gpus}", "-m", "ncmse", "train"]
    else:
        launcher = [python, "-m", "ncmse", "train"]
    if state == "resume":
        return launcher + ["--resume", str(run.run_dir)]
    argv = launcher + ["--config", run.preset]
    for item in run.overrides:
        argv += ["--set", item]
    argv += ["--out", str(run.run_dir)]
    if state == "restart":
        argv.append("--overwrite")
    return argv


def shell_command(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted line."""
    return shlex.join(argv)


def run_logged(argv: Sequence[str], log_path: Path, env: dict[str, str], note: str = "") -> int:
    """Run ``argv`` with its output appended to ``log_path`` (after a ``$ command`` line and an
    optional ``# note``); unbuffered Python, ``env`` over the current environment. Exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with open(log_path, "a") as log:
        log.write(f"$ {shell_command(argv)}{f'   # {note}' if note else ''}\n")
        log.flush()
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, check=False)
    return proc.returncode


@dataclass
class JobOutcome:
    """What became of one run after the sweep tried it."""

    status: str
    returncode: int | None = None
    seconds: float | None = None
    job_id: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class TrainFailedError(RuntimeError):
    """A training subprocess exited with a non-zero status (raised inside submitit jobs)."""


@dataclass
class TrainJob:
    """Bring one run to ``finished``; a picklable callable for submitit.

    Attributes
    ----------
    run : RunSpec
        The run.
    log_path : Path
        File that receives the training process's output (appended).
    python : str
        Interpreter.
    gpus : int
        GPUs of the job (``torchrun`` when > 1).
    env : dict
        Extra environment variables for the training process.
    """

    run: RunSpec
    log_path: Path
    python: str = sys.executable
    gpus: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str] | None:
        """Command for the run's current state, or None if it needs none."""
        state = run_state(self.run.run_dir)
        if state not in TO_RUN:
            return None
        return train_argv(self.run, state, python=self.python, gpus=self.gpus)

    def execute(self) -> int:
        """Run the training process, output appended to ``log_path``; its exit status."""
        argv = self.argv()
        if argv is None:
            return 0
        return run_logged(argv, self.log_path, self.env)

    def __call__(self) -> dict[str, Any]:
        """Entry point inside a submitit job: the run's final ``summary.json``.

        Raises
        ------
        TrainFailedError
            If the training process fails.
        """
        code = self.execute()
        summary = read_summary(self.run.run_dir) or {}
        if code != 0:
            raise TrainFailedError(
                f"ncmse train of {self.run.name} exited with status {code}; see {self.log_path}"
            )
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue after a SLURM timeout/preemption; the next start resumes from last.pt."""
        from submitit.helpers import DelayedSubmission  # optional: called by submitit only

        return DelayedSubmission(self, *args, **kwargs)


_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")


def parse_time_minutes(text: str | int) -> int:
    """SLURM-style time limit in whole minutes: ``90``, ``1:30:00``, ``2-00:00:00``, ``45:00``.

    A bare number is minutes; ``H:MM:SS`` and ``D-H:MM:SS`` as in ``sbatch --time``;
    ``MM:SS`` is minutes and seconds. Seconds round up.

    Raises
    ------
    ConfigError
        If the text is not such a time.
    """
    raw = str(text).strip()
    if raw.isdigit():
        minutes = int(raw)
    else:
        parts = raw.split("-")
        days = int(parts[0]) if len(parts) == 2 and parts[0].isdigit() else 0
        clock = parts[-1].split(":")
        if len(parts) > 2 or not all(p.isdigit() for p in clock) or not 2 <= len(clock) <= 3:
            raise ConfigError(
                f"--time {text!r} is not a time limit; use minutes (90), H:MM:SS (1:30:00) or "
                "D-H:MM:SS (2-00:00:00)"
            )
        numbers = [int(p) for p in clock]
        h, m, s = numbers if len(numbers) == 3 else [0, *numbers]
        seconds = ((days * 24 + h) * 60 + m) * 60 + s
        minutes = -(-seconds // 60)
    if minutes <= 0:
        raise ConfigError(f"--time {text!r} must be positive")
    return minutes


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each job (``--partition``, ``--time``, ``--gpus`` ...)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    parallel: int | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def parameters(self, job_name: str) -> dict[str, Any]:
        """Keyword arguments of submitit's ``AutoExecutor.update_parameters``.

        Generic keys work for every cluster; ``slurm_*`` keys are ignored by the local and debug
        executors, so the same parameters serve ``--executor slurm|local|debug``.
        """
        params: dict[str, Any] = {
            "name": job_name,
            "timeout_min": self.time_min,
            "nodes": 1,
            "tasks_per_node": 1,
            "gpus_per_node": self.gpus,
            "cpus_per_task": self.cpus_per_task or max(1, 8 * max(self.gpus, 1)),
        }
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for key, value in (
            ("slurm_partition", self.partition),
            ("slurm_account", self.account),
            ("slurm_qos", self.qos),
            ("slurm_array_parallelism", self.parallel),
        ):
            if value is not None:
                params[key] = value
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(
            "--executor slurm/local/debug needs the submitit package, which is not installed; "
            "pip install 'ncmse[slurm]' (or pip install submitit), or use --executor subprocess"
        ) from exc
    return submitit


def make_executor(kind: str, folder: Path, options: SlurmOptions, job_name: str) -> Any:
    """A configured submitit ``AutoExecutor`` for ``kind`` in {"slurm", "local", "debug"}."""
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=kind)
    except RuntimeError as exc:  # no srun on this machine
        raise ConfigError(
            f"--executor {kind} cannot start: {exc} Run ncmse sweep on a SLURM login node, or "
            "use --executor local / subprocess here"
        ) from exc
    params = options.parameters(job_name)
    if kind != "slurm":
        params["gpus_per_node"] = 0 if kind == "debug" else params["gpus_per_node"]
    executor.update_parameters(**params)
    return executor


def submit_jobs(
    jobs: Sequence[TrainJob],
    executor: Any,
    *,
    wait: bool,
    parallel: int | None = None,
    on_done: Callable[[TrainJob, JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Submit ``jobs``; with ``wait``, block until each ends.

    Parameters
    ----------
    jobs : sequence of TrainJob
        One per run.
    executor : submitit executor
        From :func:`make_executor`.
    wait : bool
        Block until the jobs end (their outcome is then ``finished`` or ``failed``); otherwise
        return at once with outcome ``submitted``.
    parallel : int, optional
        At most this many jobs at a time when waiting (a local executor starts every job it is
        given at once); None submits all together (SLURM applies its array parallelism).
    on_done : callable, optional
        Called with each job and its outcome as it ends.
    """
    if not wait or parallel is None:
        with executor.batch():
            handles = [executor.submit(job) for job in jobs]
        if not wait:
            return [JobOutcome("submitted", job_id=str(h.job_id)) for h in handles]
        return [_await(job, h, on_done) for job, h in zip(jobs, handles)]
    outcomes: list[JobOutcome | None] = [None] * len(jobs)
    pending = list(enumerate(jobs))
    active: list[tuple[int, TrainJob, Any]] = []
    while pending or active:
        while pending and len(active) < parallel:
            i, job = pending.pop(0)
            active.append((i, job, executor.submit(job)))
        finished = [a for a in active if a[2].done()]
        for item in finished:
            active.remove(item)
            outcomes[item[0]] = _await(item[1], item[2], on_done)
        if not finished:
            time.sleep(0.2)
    return [o for o in outcomes if o is not None]


def _await(job: TrainJob, handle: Any, on_done: Callable | None) -> JobOutcome:
    try:
        handle.result()
    except Exception as exc:  # noqa: BLE001 - submitit wraps any failure of the job
        outcome = JobOutcome("failed", job_id=str(handle.job_id), error=_first_line(exc))
    else:
        outcome = JobOutcome("finished", job_id=str(handle.job_id))
    if on_done is not None:
        on_done(job, outcome)
    return outcome


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_local(job: TrainJob) -> JobOutcome:
    """Run one job in a subprocess here and wait for it."""
    start = time.perf_counter()
    code = job.execute()
    seconds = round(time.perf_counter() - start, 3)
    status = "finished" if code == 0 else "failed"
    error = None if code == 0 else f"exit status {code}; see {job.log_path}"
    return JobOutcome(status, returncode=code, seconds=seconds, error=error)
