"""``ncmse ufm``: simulate the unconstrained features model, compare with the closed form.

The default (n = C = 10, p = 20, the three flows up to t = 1e6 / 1e4, 10⁴ plain-GD steps)
finishes in well under a minute on one CPU core and writes a run directory
(see :mod:`ncmse.ufm.runner`) with CSVs and summary.json; the report then draws the
figures and ``report.html`` once.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ncmse.errors import InputError
from ncmse.ufm.config import FLOWS, METHODS, UFMConfig

__all__ = ["add_arguments", "run", "config_from_args"]


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _omega_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--omega0 must be comma-separated numbers such as 0.3,1,3, got {text!r}"
        ) from exc
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ncmse ufm``."""
    d = UFMConfig()
    parser.add_argument(
        "--out", type=Path, default=None, help="run directory (default runs/ufm-C<C>-<time>)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="allow writing into a non-empty --out"
    )
    parser.add_argument(
        "--n", type=int, default=None,
        help=f"samples per class (default {d.n}, more when C (n - 1) < p)",
    )  # fmt: skip
    parser.add_argument("--C", "--num-classes", dest="num_classes", type=int, default=d.num_classes)
    parser.add_argument(
        "--p", type=int, default=None,
        help=f"feature dimension (>= C - 1; default max({d.p}, 2 (C - 1)))",
    )  # fmt: skip
    parser.add_argument(
        "--omega0",
        type=_omega_list,
        default=[],
        help="C-1 positive initial SNR singular values, comma-separated "
        "(default: geomspace(0.3, 3, C-1))",
    )
    parser.add_argument(
        "--flow",
        choices=["all", *FLOWS],
        default=d.flow,
        help="which feature flow(s) to simulate (projected = the paper's renormalised flow)",
    )
    parser.add_argument("--t-end", type=_positive_float, default=d.t_end, help="flow end time")
    parser.add_argument(
        "--central-t-end",
        type=_positive_float,
        default=d.central_t_end,
        help="end time of the (unrenormalised) central-path flow",
    )
    parser.add_argument("--num-records", type=int, default=d.num_records)
    step = parser.add_mutually_exclusive_group()
    step.add_argument(
        "--rel-step",
        type=_positive_float,
        default=d.rel_step,
        help="adaptive step: largest relative change of a singular value per step",
    )
    step.add_argument("--dt", type=_positive_float, default=None, help="fixed flow step")
    parser.add_argument("--method", choices=list(METHODS), default=d.method)
    parser.add_argument("--lam", type=float, default=d.lam, help="GD classifier ridge λ")
    parser.add_argument("--lam-h", type=float, default=d.lam_h, help="GD feature penalty λ_H")
    parser.add_argument("--lr", type=_positive_float, default=d.lr, help="GD learning rate")
    parser.add_argument("--steps", type=int, default=d.steps, help="plain GD steps (0: skip)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")


def _default_dimensions(num_classes: int, n: int | None, p: int | None) -> tuple[int, int]:
    """``(n, p)`` for which every valid C works: ``p = max(20, 2 (C − 1))`` (room for the
    C − 1 class-mean directions) and ``n = max(10, ⌈p / C⌉ + 1)`` (so that Σ_W has full rank,
    ``C (n − 1) ≥ p``); given values are kept."""
    d = UFMConfig()
    p = p if p is not None else max(d.p, 2 * (num_classes - 1))
    n = n if n is not None else max(d.n, math.ceil(p / num_classes) + 1)
    return n, p


def _check_device(name: str) -> str:
    import torch

    if name == "auto" or name == "cpu":
        return name
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type != "cuda":
        raise InputError(f"--device {name!r} is not supported; use auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise InputError(
            f"--device {name} but CUDA is not available here; use --device cpu or auto"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 ... or auto"
        )
    return name


def _default_out(num_classes: int, root: str | Path = "runs") -> Path:
    """``runs/ufm-C<C>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if that exists)."""
    from ncmse.rundir.writer import default_run_dir  # lazy: `ncmse ufm --help` stays fast

    return default_run_dir(f"ufm-C{num_classes}", root)


def config_from_args(args: argparse.Namespace) -> UFMConfig:
    """Validated :class:`UFMConfig` from parsed arguments."""
    if args.num_classes < 2:
        raise InputError(
            f"--C {args.num_classes}: the model needs at least 2 classes; use --C 2 or more"
        )
    n, p = _default_dimensions(args.num_classes, args.n, args.p)
    if args.num_records < 1:
        raise InputError(f"--num-records must be >= 1, got {args.num_records}")
    if args.steps < 0:
        raise InputError(f"--steps must be >= 0, got {args.steps}")
    if not 0 <= args.seed <= 2**63 - 1:
        raise InputError(f"--seed must be in [0, 2**63 - 1] (what torch seeds), got {args.seed}")
    for flag, value in (("--lam", args.lam), ("--lam-h", args.lam_h)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{flag} must be a finite number >= 0, got {value}")
    if args.omega0 and len(args.omega0) != args.num_classes - 1:
        raise InputError(
            f"--omega0 has {len(args.omega0)} values but C - 1 = {args.num_classes - 1} are "
            "needed (one per whitened class-mean singular value)"
        )
    from ncmse.ufm.model import check_dimensions

    check_dimensions(n, args.num_classes, p)
    return UFMConfig(
        n=n,
        num_classes=args.num_classes,
        p=p,
        omega0=list(args.omega0),
        flow=args.flow,
        t_end=args.t_end,
        central_t_end=args.central_t_end,
        num_records=args.num_records,
        rel_step=None if args.dt is not None else args.rel_step,
        dt=args.dt,
        method=args.method,
        lam=args.lam,
        lam_h=args.lam_h,
        lr=args.lr,
        steps=args.steps,
        seed=args.seed,
        device=_check_device(args.device),
    )


def run(args: argparse.Namespace) -> int:
    """Run the experiment, write the run directory, then the report (figures drawn once)."""
    from ncmse.rundir.guard import lock_run_dir, release_run_dir, remove_new_run_dir
    from ncmse.train.config import is_run_config

    cfg = config_from_args(args)
    run_dir: Path = args.out if args.out is not None else _default_out(cfg.num_classes)
    lock_run_dir(
        run_dir,
        new=True,
        overwrite=args.overwrite,
        resumable=False,
        is_run_config=is_run_config,
    )
    try:
        return _run_locked(cfg, args, run_dir)
    except BaseException:
        remove_new_run_dir(run_dir)  # a failed run leaves no half-written directory behind
        raise
    finally:
        release_run_dir(run_dir)


def _run_locked(cfg: UFMConfig, args: argparse.Namespace, run_dir: Path) -> int:
    """The experiment and its report, in a run directory whose lock this process holds."""
    from ncmse.ufm.runner import run_ufm

    print(f"ncmse ufm: run directory {run_dir}", flush=True)
    summary = run_ufm(cfg, run_dir)
    for name, info in summary["flows"].items():
        err = info.get("max_rel_error_omega")
        extra = f", max |ω_sim/ω_pred − 1| = {err:.2e}" if err is not None else ""
        print(f"{name:>9}: {info['num_steps']} steps, {info['step_rule']}{extra}")
        if info.get("stopped"):
            print(f"{'':>9}  note: {info['stopped'].split(' (')[0]}")
    if summary["gd"] is not None:
        final = summary["gd"]["final"]
        print(
            f"       gd: {cfg.steps} steps, L = {final['loss']:.4g}, "
            f"L_perp/L = {final['loss_perp_ratio']:.3g}, nc1 = {final['nc1']:.3g}"
        )
    if not args.no_figures:
        from ncmse.report import write_run_report

        page = write_run_report(run_dir)
        print(f"wrote the figures to {run_dir / 'figures'} and {page}")
    print(f"run directory: {run_dir}")
    return 0
