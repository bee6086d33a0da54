"""Benchmarks of the UFM closed form and the projected flow; prints a small table.

Usage: ``python benchmarks/bench_ufm.py [--points 1000000] [--steps 10000]``

* closed form: ω_j(t) for 10⁶ log-spaced times in [0, 1e12] × 9 singular values (target ≤ 1 s)
* projected flow, n = 100, C = 10, p = 20, 10⁴ fixed Euler and Heun steps
* plain UFM GD, same sizes, 10⁴ steps without measurements
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ncmse.ufm import closed_form, flows, gd, model


def _best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, str, float, str]] = []

    law = closed_form.projected_law(10, 10)
    t = np.concatenate([[0.0], np.logspace(-3, 12, args.points - 1)])
    w0 = np.geomspace(0.3, 3.0, 9)
    sec = _best_of(lambda: law.omega(t, w0), args.repeat)
    rows.append(("closed form (projected)", f"{args.points} t x 9", sec, "target <= 1 s"))
    var = closed_form.variant_law(10, 10)
    sec = _best_of(lambda: var.omega(t, w0), args.repeat)
    rows.append(("closed form (variant)", f"{args.points} t x 9", sec, ""))

    n, C, p = 100, 10, 20
    H = model.make_features(n, C, p, w0, seed=0)
    dt = 1.0
    times = np.array([0.0, args.steps * dt])
    for method in ("euler", "heun"):
        start = time.perf_counter()
        result = flows.simulate_flow(H, flow="projected", times=times, dt=dt, method=method)
        sec = time.perf_counter() - start
        pred = closed_form.projected_law(n, C).omega(times, np.sort(w0)[::-1])
        err = float(np.max(np.abs(result.omega[-1] / pred[-1] - 1)))
        rows.append(
            (f"projected flow ({method})", f"n={n} C={C} p={p}, {result.num_steps} steps",
             sec, f"{1e3 * sec / result.num_steps:.2f} ms/step, |w/w_pred-1|={err:.1e}")
        )  # fmt: skip

    state = gd.init_gd(n, C, p, seed=0)
    sec = _best_of(
        lambda: gd.run_gd(state, lam=5e-3, lam_h=1e-3, lr=0.5, steps=args.steps, measure=False,
                          record_steps=np.array([0, args.steps])),
        1,
    )  # fmt: skip
    rows.append(("plain UFM GD", f"n={n} C={C} p={p}, {args.steps} steps", sec,
                 f"{1e3 * sec / args.steps:.2f} ms/step"))  # fmt: skip

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"ncmse UFM benchmarks (torch {torch.__version__}, {device}, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    print(f"{'benchmark':<26} {'size':<34} {'seconds':>9}  note")
    for name, size, sec, note in rows:
        print(f"{name:<26} {size:<34} {sec:>9.3f}  {note}")


if __name__ == "__main__":
    main()
