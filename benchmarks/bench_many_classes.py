"""Benchmark: measuring collapse over many classes (a language model's vocabulary).

Cases are (C, p, N) with Zipfian class counts (n_c ∝ 1/rank, so many tail classes are absent
or have a single sample) and random features h = μ_y + 0.5·ε, streamed in batches from a generator
that is re-run for the NC4 pass (features never held: ``memory_budget_bytes=0``); classes with
fewer than 2 samples are left out (``min_samples=2``). ``--uniform`` instead uses balanced labels
(every class N/C times, random order) and measures in-memory features with ``measure_features``,
the setting of the issue's "today" table.

Each CPU case runs in a fresh subprocess that reports its wall time and peak resident memory
(ru_maxrss); ``--baseline-src DIR`` runs the same (uniform) case with another ncmse checkout on
PYTHONPATH, for a before/after ratio measured in the same run. rhubarbwu/neural-collapse is not
installable here (no registry package), so only ncmse is timed.

GPU (``--device cuda``): cases run in-process; features are generated on the device in batches
of 1024; peak device memory from ``torch.cuda.max_memory_allocated``. The issue-11 sizes
(N=50k/p=512/C=10 and N=200k/p=2048/C=100) are also timed against the float64 floor (one pass
accumulating HᵀH over the same batches). Every case is guarded (an error becomes a JSON line)
and no case starts once ``--budget-s`` is spent. Results are JSON lines appended to
``$OUT/bench_many_classes.jsonl`` (or ``--out``) and a table on stdout.

Usage::

    python benchmarks/bench_many_classes.py --cases 1000x256x20000,10000x256x100000
    python benchmarks/bench_many_classes.py --uniform --cases 8000x256x40000 \\
        --baseline-src /path/to/old/src
    PYTHONPATH=gpu/src python gpu/benchmarks/bench_many_classes.py --device cuda --budget-s 90
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

BATCH = 1024
DEFAULT_CASES = (
    "1000x256x20000,1000x768x20000,10000x256x100000,10000x768x100000,"
    "50257x256x500000,50257x768x500000"
)
GPU_CASES = "50257x768x500000"
FLOOR_CASES = ((50_000, 512, 10), (200_000, 2048, 100))


# ----------------------------------------------------------------------------- data
def zipf_labels(n: int, C: int, gen: torch.Generator, device: str, exponent: float = 1.0):
    weights = torch.arange(1, C + 1, dtype=torch.float64, device=device).pow(-exponent)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def make_problem(C: int, p: int, seed: int, device: str):
    g = torch.Generator(device=device).manual_seed(seed)
    means = torch.randn(C, p, generator=g, device=device)
    W = torch.randn(C, p, generator=g, device=device) / p**0.5
    b = 0.1 * torch.randn(C, generator=g, device=device)
    return means, W, b


def stream_factory(means, N: int, seed: int, uniform: bool, device: str):
    """Zero-argument callable returning a fresh generator of (features, labels) batches."""
    C, p = means.shape

    def stream():
        g = torch.Generator(device=device).manual_seed(seed + 1)
        if uniform:  # balanced: every class N/C times, in random order
            order = torch.randperm(N, generator=g, device=device) % C
        for start in range(0, N, BATCH):
            n = min(BATCH, N - start)
            if uniform:
                y = order[start : start + n]
            else:
                y = zipf_labels(n, C, g, device)
            yield means[y] + 0.5 * torch.randn(n, p, generator=g, device=device), y

    return stream


# ----------------------------------------------------------------------------- one case
def run_case(C: int, p: int, N: int, *, uniform: bool, device: str, old_api: bool = False):
    """Measure one case; returns a dict (time, memory, a few metrics)."""
    import ncmse

    means, W, b = make_problem(C, p, 0, device)
    stream = stream_factory(means, N, 0, uniform, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if uniform:  # in-memory features, as in the "today" table
        feats, labels = map(torch.cat, zip(*stream()))
        sync()
        t0 = time.perf_counter()
        kw = {} if old_api else {"min_samples": 1}
        r = ncmse.measure_features(feats, labels, W, b, num_classes=C, lam=1e-3, **kw)
    else:
        sync()
        t0 = time.perf_counter()
        for _ in stream():  # generating the stream once (the measurement reads it twice)
            pass
        sync()
        gen_pass = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = ncmse.measure_stream(
            stream, W, b, num_classes=C, lam=1e-3, memory_budget_bytes=0, min_samples=2,
            device=device,
        )  # fmt: skip
    sync()
    seconds = time.perf_counter() - t0
    out = {
        "C": C, "p": p, "N": N, "device": device, "uniform": uniform, "seconds": seconds,
        "generate_one_pass_s": None if uniform else gen_pass,
        "num_classes_measured": r.num_classes, "num_samples": r.num_samples,
        "num_classes_excluded": getattr(r, "num_classes_excluded", 0),
        "num_samples_excluded": getattr(r, "num_samples_excluded", 0),
        "nc1": r.nc1, "cdnv": r.cdnv, "nc4": r.nc4, "accuracy": r.accuracy,
        "equiangular_means": r.equiangular_means, "etf_error_wm": r.etf_error_wm,
        "loss_nc23": r.loss_nc23,
    }  # fmt: skip
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mb"] = usage.ru_maxrss / 1024
    # process CPU time (data generation included): less sensitive than wall time to other load
    out["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    return out


def floor_case(N: int, p: int, C: int, device: str, repeats: int = 3):
    """ncmse.measure_stream vs the float64 HᵀH floor over the same batches (issue 11)."""
    import ncmse

    g = torch.Generator(device=device).manual_seed(0)
    means = torch.randn(C, p, generator=g, device=device)
    batches = []
    for start in range(0, N, BATCH):
        y = torch.randint(0, C, (min(BATCH, N - start),), generator=g, device=device)
        y[: min(len(y), C)] = torch.arange(min(len(y), C), device=device)
        batches.append((means[y] + 0.3 * torch.randn(len(y), p, generator=g, device=device), y))
    W, b = torch.randn(C, p, device=device), torch.randn(C, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def floor():
        S = torch.zeros(p, p, dtype=torch.float64, device=device)
        for h, _ in batches:
            h64 = h.double()
            S.addmm_(h64.T, h64)
        return S

    def ncmse_run():
        return ncmse.measure_stream(batches, W, b, num_classes=C, lam=1e-3, device=device)

    def ncmse_features():
        feats = torch.cat([h for h, _ in batches])
        labels = torch.cat([y for _, y in batches])
        sync()
        t0 = time.perf_counter()
        ncmse.measure_features(feats, labels, W, b, num_classes=C, lam=1e-3)
        sync()
        return time.perf_counter() - t0

    def best(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_floor, t_stream = best(floor), best(ncmse_run)
    ncmse_features()
    t_feat = min(ncmse_features() for _ in range(repeats))
    # where is the p³ finalisation (SVDs, Cholesky, LS solve) fastest: on the device or the host?
    from ncmse.collapse.api import result_from_stats
    from ncmse.collapse.stats import ClassStats

    stats = ClassStats(C, p, device=device)
    for h, y in batches:
        stats.update(h, y, validate=False)
    host = ClassStats(C, p)
    host = stats.to_like(host)
    t_fin_dev = best(lambda: result_from_stats(stats, W, b, lam=1e-3, warn=False))
    t_fin_host = best(lambda: result_from_stats(host, W.cpu(), b.cpu(), lam=1e-3, warn=False))
    return {
        "case": "floor", "N": N, "p": p, "C": C, "device": device,
        "floor_s": t_floor, "measure_stream_s": t_stream, "measure_features_s": t_feat,
        "stream_over_floor": t_stream / t_floor, "features_over_floor": t_feat / t_floor,
        "finalize_on_device_s": t_fin_dev, "finalize_on_host_s": t_fin_host,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }  # fmt: skip


# ----------------------------------------------------------------------------- driver
def parse_cases(text: str) -> list[tuple[int, int, int]]:
    out = []
    for item in filter(None, text.split(",")):
        C, p, N = (int(v) for v in item.lower().split("x"))
        out.append((C, p, N))
    return out


def child_main(spec: str) -> None:
    args = json.loads(spec)
    torch.set_num_threads(args.pop("threads"))
    print("RESULT " + json.dumps(run_case(**args)), flush=True)


def run_child(case, *, uniform: bool, threads: int, src: str | None, timeout: float):
    C, p, N = case
    spec = {"C": C, "p": p, "N": N, "uniform": uniform, "device": "cpu", "threads": threads}
    if src is not None:
        spec["old_api"] = True
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"case {case} failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=None, help=f"CxPxN,... (default {DEFAULT_CASES})")
    ap.add_argument("--uniform", action="store_true", help="uniform labels, in-memory features")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--baseline-src", default=None, help="another ncmse src dir to time as well")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="start no case after")
    ap.add_argument("--case-timeout-s", type=float, default=3600.0)
    ap.add_argument("--no-floor", action="store_true", help="GPU: skip the issue-11 floor cases")
    ap.add_argument("--out", default=None, help="JSON-lines file (default $OUT/...)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    out_path = (
        Path(args.out)
        if args.out
        else Path(os.environ.get("OUT", ".")) / ("bench_many_classes.jsonl")
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    gpu = args.device.startswith("cuda")
    cases = parse_cases(args.cases or (GPU_CASES if gpu else DEFAULT_CASES))
    start = time.perf_counter()

    def record(row: dict) -> None:
        row["torch"] = torch.__version__
        with out_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    jobs: list[tuple[str, object]] = []
    if gpu and not args.no_floor:
        jobs += [("floor", c) for c in FLOOR_CASES]
    jobs += [("case", c) for c in cases]
    for kind, case in jobs:
        if time.perf_counter() - start > args.budget_s:
            record({"case": str(case), "skipped": "budget spent"})
            continue
        try:
            if kind == "floor":
                record(floor_case(*case, device=args.device))
            elif gpu:
                record(run_case(*case, uniform=args.uniform, device=args.device))
            else:
                row = run_child(
                    case, uniform=args.uniform, threads=args.threads, src=None,
                    timeout=args.case_timeout_s,
                )  # fmt: skip
                if args.baseline_src:
                    base = run_child(
                        case, uniform=args.uniform, threads=args.threads,
                        src=args.baseline_src, timeout=args.case_timeout_s,
                    )  # fmt: skip
                    row["baseline_seconds"] = base["seconds"]
                    row["baseline_peak_rss_mb"] = base["peak_rss_mb"]
                    row["speedup"] = base["seconds"] / row["seconds"]
                record(row)
        except Exception as exc:  # one failing case must not lose the others
            record({"case": str(case), "kind": kind, "error": repr(exc)[:500],
                    "trace": traceback.format_exc()[-1500:]})  # fmt: skip


if __name__ == "__main__":
    main()
