"""Benchmark of the measurement core (issue: measurement core).

(a) ncmse: every SPEC §2–§3 quantity from a stream of feature batches (ncmse.measure_stream)
(b) the widespread baseline, nc1 only: two passes, per-class Python loops, per-sample outer products
    (a B_c×p×p tensor per class and batch), a scipy.sparse.linalg.svds pseudo-inverse of Σ_B
(c) the floor: one pass accumulating HᵀH in float64 over the same batches
(d) ncmse.measure_features on the same features held in memory as one [N, p] tensor

(a), (c) and (d) run in interleaved rounds; the table gives each one's best time and the ratios
of the best times, then the ratio of each round (robust to a change of load during the run).

Prints times and ratios measured in this run, then the peak resident memory of (a) streaming
N = 50,000 and N = 200,000 features from a generator (each in a fresh subprocess).

Usage: python benchmarks/bench_measure.py [--quick] [--baseline-large]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from functools import partial

import numpy as np
import torch
from scipy.sparse.linalg import svds

import ncmse

BATCH = 128


def make_batches(n: int, p: int, C: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Synthetic float32 features: class means N(0, I) + noise 0.3·N(0, I), batches of 128."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, p, generator=g)
    out = []
    for start in range(0, n, BATCH):
        b = min(BATCH, n - start)
        y = torch.randint(0, C, (b,), generator=g)
        y[: min(b, C)] = torch.arange(min(b, C))  # every class appears
        out.append((means[y] + 0.3 * torch.randn(b, p, generator=g), y))
    return out


def run_ncmse(batches, W, b, C):
    return ncmse.measure_stream(batches, W, b, num_classes=C, lam=1e-3)


def run_features(features, labels, W, b, C):
    return ncmse.measure_features(features, labels, W, b, num_classes=C, lam=1e-3)


def run_floor(batches, p):
    S = torch.zeros(p, p, dtype=torch.float64)
    for h, _ in batches:
        h64 = h.double()
        S.addmm_(h64.T, h64)
    return S


def run_baseline(batches, C, p):
    """nc1 the way most public NC scripts compute it (float64 so that the values are comparable)."""
    N = 0
    mean = [torch.zeros(p, dtype=torch.float64) for _ in range(C)]
    n_per = [0] * C
    for h, y in batches:  # pass 1: class means, per-class loop
        for c in range(C):
            hc = h[y == c].double()
            mean[c] += hc.sum(dim=0)
            n_per[c] += hc.shape[0]
    mean = [m / n for m, n in zip(mean, n_per)]
    N = sum(n_per)
    Sw = torch.zeros(p, p, dtype=torch.float64)
    for h, y in batches:  # pass 2: per-sample outer products
        for c in range(C):
            z = h[y == c].double() - mean[c]
            Sw += torch.matmul(z.unsqueeze(-1), z.unsqueeze(1)).sum(dim=0)
    Sw /= N
    M = torch.stack(mean).T
    muG = M.mean(dim=1, keepdim=True)
    Mbar = (M - muG).numpy()
    Sb = Mbar @ Mbar.T / C
    eigvec, eigval, _ = svds(Sb, k=C - 1)
    inv_Sb = eigvec @ np.diag(eigval**-1) @ eigvec.T
    return float(np.trace(Sw.numpy() @ inv_Sb) / C)


def best_of(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def interleaved(stream, floor, features, repeats: int):
    """(a), (c), (d) timed in rounds (a, c, d, a, c, d, ...), so that a change of machine load
    hits all three alike. Returns the best time of each, (a)'s result, and the per-round ratios
    ((a)/(c), (d)/(c))."""
    times: list[list[float]] = [[], [], []]
    result = None
    for _ in range(repeats):
        for i, fn in enumerate((stream, floor, features)):
            t0 = time.perf_counter()
            value = fn()
            times[i].append(time.perf_counter() - t0)
            if i == 0:
                result = value
    ratios = (
        [a / c for a, c in zip(times[0], times[1])],
        [d / c for d, c in zip(times[2], times[1])],
    )
    return min(times[0]), min(times[1]), min(times[2]), result, ratios


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def memory_child(n: int, p: int, C: int) -> None:
    """Stream n features from a generator (never materialised), second pass for NC4; print RSS."""
    g = torch.Generator().manual_seed(1)
    means = torch.randn(C, p, generator=g)
    W, b = torch.randn(C, p, generator=g), torch.zeros(C)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stream():
        gen = torch.Generator().manual_seed(2)
        for start in range(0, n, BATCH):
            y = torch.randint(0, C, (min(BATCH, n - start),), generator=gen)
            yield means[y] + 0.3 * torch.randn(len(y), p, generator=gen), y

    r = ncmse.measure_stream(stream, W, b, num_classes=C, lam=1e-3, memory_budget_bytes=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{n} {base / 1024:.1f} {peak / 1024:.1f} {r.nc4_method}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--memory-child", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds of (a), (c), (d)")
    ap.add_argument(
        "--baseline-large",
        action="store_true",
        help="also run (b) at the second size (B×p×p = 4.3 GB per batch; ~10 min)",
    )
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    torch.set_num_threads(torch.get_num_threads())
    sizes = [(50_000, 512, 10), (20_000, 2_048, 100)]
    if args.quick:
        sizes = [(5_000, 128, 10), (2_000, 256, 20)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    header = (
        f"{'N':>7} {'p':>5} {'C':>4} | {'(a) ncmse s':>11} {'(b) base s':>10} "
        f"{'(c) floor s':>11} {'(d) feat s':>10} | {'(a)/(c)':>7} {'(d)/(c)':>7} {'(b)/(a)':>7} "
        f"| nc1 rel.diff"
    )
    print(header)
    print("-" * len(header))
    for i, (n, p, C) in enumerate(sizes):
        batches = make_batches(n, p, C)
        g = torch.Generator().manual_seed(3)
        W, b = torch.randn(C, p, generator=g), torch.randn(C, generator=g)
        run_ncmse(batches[:4], W, b, C)  # warm-up
        features = torch.cat([h for h, _ in batches])
        labels = torch.cat([y for _, y in batches])
        t_a, t_c, t_d, res, ratios = interleaved(
            partial(run_ncmse, batches, W, b, C),
            partial(run_floor, batches, p),
            partial(run_features, features, labels, W, b, C),
            repeats=args.repeats,
        )
        if i == 0 or args.baseline_large:
            t_b, nc1_b = best_of(partial(run_baseline, batches, C, p), 1)
            diff = abs(res.nc1 - nc1_b) / abs(nc1_b)
            b_cols = f"{t_b:>10.2f}", f"{t_b / t_a:>7.1f}", f"{diff:.1e}"
        else:
            b_cols = f"{'skipped':>10}", f"{'-':>7}", "-"
        print(
            f"{n:>7} {p:>5} {C:>4} | {t_a:>11.3f} {b_cols[0]} {t_c:>11.3f} {t_d:>10.3f} | "
            f"{t_a / t_c:>7.2f} {t_d / t_c:>7.2f} {b_cols[1]} | {b_cols[2]}"
        )
        print(
            f"{'':>18}  per-round ratios (a)/(c): {_fmt(ratios[0])}, median "
            f"{statistics.median(ratios[0]):.2f}; (d)/(c): {_fmt(ratios[1])}, median "
            f"{statistics.median(ratios[1]):.2f}"
        )
    print()
    print("peak resident memory of (a) streaming from a generator (p=512, C=10, NC4 by 2nd pass):")
    for n in (50_000, 200_000) if not args.quick else (5_000, 20_000):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), "512", "10"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        print(
            f"  N = {int(out[0]):>7}: after import {float(out[1]):7.1f} MiB, "
            f"peak {float(out[2]):7.1f} MiB, growth {float(out[2]) - float(out[1]):6.1f} MiB "
            f"(nc4 by {out[3]})"
        )


if __name__ == "__main__":
    main()
