"""``ncmse sweep``: options and their merge with a sweep file (implementation: ncmse.sweep)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ncmse.errors import ConfigError, NCMSEError

__all__ = ["add_arguments", "build_options", "build_spec", "run", "write_sweep_report"]

_EXAMPLES = """
    ncmse sweep --preset fashion-cnn-mse fashion-cnn-ce --seeds 0 1 2 --out sweeps/fashion
    ncmse sweep --preset paper-cifar10-resnet18-mse --lr-grid paper --out sweeps/lr \\
        --executor slurm --partition gpu --time 12:00:00 --gpus 1
    ncmse sweep -f configs/sweeps/fashion-cpu.yaml --dry-run
"""

#: keys of the ``slurm:`` mapping of a sweep file
_SLURM_FILE_KEYS = (
    "partition",
    "time",
    "gpus",
    "cpus_per_task",
    "mem_gb",
    "account",
    "qos",
    "parallel",
    "extra",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ncmse sweep``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EXAMPLES
    grid = parser.add_argument_group("grid")
    grid.add_argument(
        "-f",
        "--file",
        metavar="SWEEP_YAML",
        help="sweep file (keys: presets, seeds, lr, wd, set, select_lr, out, "
        "executor, pack, slurm); flags given on the command line replace its values",
    )
    grid.add_argument(
        "--preset",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="preset name or YAML path (repeatable)",
    )
    grid.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds (default: preset's)")
    lr = grid.add_mutually_exclusive_group()
    lr.add_argument(
        "--lr", nargs="+", type=float, metavar="LR", help="learning rates (default: preset's)"
    )
    lr.add_argument(
        "--lr-grid",
        metavar="paper|LOW:HIGH:NUM",
        help="log-spaced learning rates; 'paper' = 25 values in [1e-4, 0.25]; implies --select-lr",
    )
    grid.add_argument(
        "--wd", nargs="+", type=float, metavar="WD", help="weight decays (default: preset's)"
    )
    grid.add_argument(
        "--set",
        nargs="+",
        action="extend",
        dest="overrides",
        metavar="KEY=VALUE",
        default=None,
        help="config override applied to every run (repeatable)",
    )
    grid.add_argument(
        "--select-lr",
        action="store_true",
        default=None,
        help="after the runs, pick per (preset, wd) the lr with the lowest final "
        "test error (mean over seeds) -> SWEEP_DIR/lr_selection.json",
    )
    grid.add_argument("--out", metavar="SWEEP_DIR", help="sweep directory (required)")
    act = parser.add_argument_group("execution")
    act.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (run, preset, seed, lr, wd, state) and exit",
    )
    act.add_argument(
        "--print-commands",
        action="store_true",
        help="print the ncmse train command of every run still to do",
    )
    act.add_argument(
        "--executor",
        default=None,
        metavar="{subprocess,local,slurm,debug}",
        help="subprocess (default): one run after the other here; local: submitit "
        "LocalExecutor; slurm: submitit on SLURM; debug: submitit in-process",
    )
    act.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for submitted jobs and collect (default: yes, except slurm)",
    )
    act.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="jobs at once (local: default 1; slurm: array parallelism)",
    )
    act.add_argument(
        "--pack",
        type=int,
        metavar="K",
        help="train up to K compatible runs (same preset; seed, lr, wd may differ) together "
        "in one process, each in its own run directory (default 1: one process per run)",
    )
    act.add_argument("--no-report", action="store_true", help="skip the multi-run report")
    act.add_argument("--python", default=sys.executable, help="interpreter of the runs")
    slurm = parser.add_argument_group("SLURM (executor slurm; resources also used by local)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time", help="time limit per job: minutes, H:MM:SS or D-H:MM:SS")
    slurm.add_argument("--gpus", type=int, help="GPUs per job (default 1; >1 uses torchrun)")
    slurm.add_argument("--cpus-per-task", type=int, help="CPUs per job (default 8 per GPU)")
    slurm.add_argument("--mem-gb", type=float, help="memory per job in GB")
    slurm.add_argument("--account", help="SLURM account")
    slurm.add_argument("--qos", help="SLURM QOS")
    slurm.add_argument(
        "--slurm-extra",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="extra sbatch options, e.g. constraint=a100",
    )


def _pick(cli: Any, file_value: Any, default: Any = None) -> Any:
    if cli is not None:
        return cli
    return file_value if file_value is not None else default


def build_spec(args: argparse.Namespace, file: dict[str, Any]) -> Any:
    """The :class:`~ncmse.sweep.SweepSpec` of the command line, on top of a sweep file's values."""
    from ncmse.sweep.grid import SweepSpec, lr_grid

    lrs = file.get("lrs")
    select = file.get("select_lr", False)
    if args.lr is not None:
        lrs = tuple(dict.fromkeys(args.lr))
    elif args.lr_grid is not None:
        lrs, select = lr_grid(args.lr_grid), True
    return SweepSpec(
        presets=tuple(_pick(args.preset, file.get("presets"), ())),
        seeds=None
        if args.seeds is None and "seeds" not in file
        else tuple(dict.fromkeys(_pick(args.seeds, file.get("seeds")))),
        lrs=lrs,
        wds=None
        if args.wd is None and "wds" not in file
        else tuple(dict.fromkeys(_pick(args.wd, file.get("wds")))),
        overrides=tuple(file.get("overrides", ())) + tuple(args.overrides or ()),
        select_lr=bool(args.select_lr or select),
    )


def _slurm_options(args: argparse.Namespace, file: dict[str, Any], executor: str) -> Any:
    from ncmse.sweep.execute import SlurmOptions, parse_time_minutes

    conf = dict(file.get("slurm", {}))
    unknown = sorted(set(conf) - set(_SLURM_FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"sweep file: unknown slurm key(s) {unknown}; valid: {', '.join(_SLURM_FILE_KEYS)}"
        )
    extra = [f"{k}={v}" for k, v in (conf.get("extra") or {}).items()]
    extra += list(args.slurm_extra or [])
    pairs = []
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm-extra expects KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    gpus = _pick(args.gpus, conf.get("gpus"), 1 if executor == "slurm" else 0)
    parallel = _pick(args.parallel, conf.get("parallel"))
    if gpus < 0 or (parallel is not None and parallel < 1):
        raise ConfigError("--gpus must be >= 0 and --parallel >= 1")
    mem = _pick(args.mem_gb, conf.get("mem_gb"))
    return SlurmOptions(
        partition=_pick(args.partition, conf.get("partition")),
        time_min=parse_time_minutes(_pick(args.time, conf.get("time"), 24 * 60)),
        gpus=int(gpus),
        cpus_per_task=_pick(args.cpus_per_task, conf.get("cpus_per_task")),
        mem_gb=None if mem is None else float(mem),
        account=_pick(args.account, conf.get("account")),
        qos=_pick(args.qos, conf.get("qos")),
        parallel=parallel,
        extra=tuple(pairs),
    )


def build_options(args: argparse.Namespace, file: dict[str, Any]) -> Any:
    """The :class:`~ncmse.sweep.SweepOptions` of the command line, on top of a sweep file's."""
    from ncmse.sweep.core import EXECUTORS, SweepOptions

    out = _pick(args.out, file.get("out"))
    if out is None:
        raise ConfigError("no sweep directory; pass --out SWEEP_DIR (or 'out:' in the sweep file)")
    executor = _pick(args.executor, file.get("executor"), "subprocess")
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is unknown; choose one of {list(EXECUTORS)}")
    return SweepOptions(
        out=Path(out),
        executor=executor,
        slurm=_slurm_options(args, file, executor),
        wait=args.wait,
        dry_run=args.dry_run,
        print_commands=args.print_commands,
        python=args.python,
        command=["ncmse", *sys.argv[1:]] if sys.argv[1:2] == ["sweep"] else [],
        pack=int(_pick(getattr(args, "pack", None), file.get("pack"), 1)),
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ncmse sweep``."""
    from ncmse.sweep.core import run_sweep
    from ncmse.sweep.grid import load_sweep_file

    file = load_sweep_file(args.file) if args.file else {}
    spec = build_spec(args, file)
    options = build_options(args, file)
    status = run_sweep(spec, options)
    if not (args.no_report or options.dry_run):
        write_sweep_report(options.out)
    return status


def write_sweep_report(out: Path) -> str | None:
    """Draw the comparison report of the sweep's finished runs in ``SWEEP_DIR/report`` and name
    it in ``sweep.json``; a report that cannot be drawn is announced, not raised (the runs and
    their results are already written)."""
    from ncmse.sweep.core import finished_run_dirs, record_report

    path = None
    dirs = finished_run_dirs(out)
    if dirs:
        from ncmse.report import write_comparison_report

        try:
            path = str(write_comparison_report(dirs, out / "report"))
        except (NCMSEError, OSError, ValueError) as exc:
            print(f"multi-run report failed: {exc}", file=sys.stdout)
        else:
            print(f"report: {path}", file=sys.stdout)
    record_report(out, path)
    return path
