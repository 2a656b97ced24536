"""Benchmark of the approach-3 fit on Chinchilla's 240 runs (Epoch's extraction), in one run:

1. the full 4,500-start grid with llm-ray's fitter (vectorised objective, analytic gradient, batched
   L-BFGS, pruning to the best starts, scipy polish), target <= 10 s;
2. 200 bootstrap refits over runs, warm-started from the full fit, target <= 60 s;
3. the naive baseline: a Python loop of scipy L-BFGS-B with numerical gradients from each start (as
   Epoch's notebook does), timed on a fixed random subset of starts and EXTRAPOLATED per start to
   the 4,500-start grid (measuring all of it takes ~15 minutes on 2 cores); likewise naive warm-started
   bootstrap refits on a subset of the resamples, extrapolated to all of them.

    python bench/bench_fit.py [--repeats 2] [--naive-starts 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
from scipy.optimize import minimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llm_ray.fitting import draw_run_counts, epoch_grid, fit_parametric, objective_at, refit_batch  # noqa: E402
from llm_ray.fitting.config import (EPOCH_A_GRID, EPOCH_ALPHA_GRID, EPOCH_B_GRID, EPOCH_BETA_GRID,  # noqa: E402
                                    EPOCH_E_GRID)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "chinchilla_epoch_svg.csv")
EPOCH = (1.8172, 482.01, 2085.43, 0.3478, 0.3658)  # E, A, B, alpha, beta (Besiroglu et al. 2024)


def naive_objective(params, log_n, log_d, log_l, delta=1e-3):
    """Epoch's objective as their notebook writes it: one start at a time, no gradient."""
    a, b, e, alpha, beta = params
    pred = np.log(np.exp(a - alpha * log_n) + np.exp(b - beta * log_d) + np.exp(e))
    r = log_l - pred
    return np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions of the fast fits (min reported)")
    ap.add_argument("--naive-starts", type=int, default=40, help="grid starts timed for the naive baseline")
    ap.add_argument("--n-bootstrap", type=int, default=200)
    args = ap.parse_args()

    df = pd.read_csv(DATA)
    df = df[df["loss"] < np.sort(df["loss"])[-5]]  # Epoch: drop the 5 highest-loss runs -> 240
    n, d, l = (df[c].to_numpy() for c in ("params", "tokens", "loss"))
    grid = epoch_grid(EPOCH_ALPHA_GRID, EPOCH_BETA_GRID, EPOCH_E_GRID, EPOCH_A_GRID, EPOCH_B_GRID)
    print(f"data: {len(df)} Chinchilla runs (Epoch's SVG extraction), grid: {len(grid)} starts, "
          f"{os.cpu_count()} CPUs")

    fit_times, fit = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit = fit_parametric(n, d, l, grid=grid)
        fit_times.append(time.perf_counter() - t0)
    counts = draw_run_counts(len(df), args.n_bootstrap, seed=0)
    boot_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        params, ok = refit_batch(fit.theta, n, d, l, counts)
        boot_times.append(time.perf_counter() - t0)

    rng = np.random.default_rng(0)
    subset = grid[rng.choice(len(grid), size=args.naive_starts, replace=False)]
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(l)
    t0 = time.perf_counter()
    naive_best = np.inf
    for start in subset:
        res = minimize(naive_objective, start, args=(log_n, log_d, log_l), method="L-BFGS-B")
        naive_best = min(naive_best, res.fun)
    naive_per_start = (time.perf_counter() - t0) / len(subset)
    naive_full = naive_per_start * len(grid)
    n_naive_boot = max(1, min(args.naive_starts // 2, args.n_bootstrap))
    t0 = time.perf_counter()
    for w in counts[:n_naive_boot]:
        keep = np.repeat(np.arange(len(w)), w)  # the resampled rows, duplicates included
        minimize(naive_objective, fit.theta, args=(log_n[keep], log_d[keep], log_l[keep]), method="L-BFGS-B")
    naive_boot = (time.perf_counter() - t0) / n_naive_boot * args.n_bootstrap

    fit_s, boot_s = min(fit_times), min(boot_times)
    print(f"\nfit: E={fit.E:.4f} A={fit.A:.2f} B={fit.B:.2f} alpha={fit.alpha:.4f} beta={fit.beta:.4f} "
          f"a={fit.a:.4f}  objective={fit.objective:.6e} (Epoch's point: {objective_at(EPOCH, n, d, l):.6e}), "
          f"converged={fit.converged} (max|grad|={fit.grad_norm:.1e})")
    print(f"\nfull grid, llm-ray fitter ({len(grid)} starts, {fit.n_kept} kept after pruning): "
          f"{fit_s:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in fit_times)}; target <= 10 s)")
    print(f"{args.n_bootstrap} bootstrap refits (warm-started, batched):        "
          f"{boot_s:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in boot_times)}; target <= 60 s; "
          f"{int(ok.sum())}/{len(ok)} converged)")
    print(f"naive baseline (scipy L-BFGS-B, numerical gradients, one start at a time): "
          f"{naive_per_start * 1e3:.0f} ms/start measured on {len(subset)} random starts (seed 0);\n"
          f"    EXTRAPOLATED to {len(grid)} starts: {naive_full:.0f} s = {naive_full / 60:.1f} min "
          f"(best objective on the subset: {naive_best:.6e})")
    print(f"naive bootstrap (same, warm-started from the fit): {naive_boot / args.n_bootstrap * 1e3:.0f} ms/refit "
          f"measured on {n_naive_boot} resamples;\n    EXTRAPOLATED to {args.n_bootstrap} refits: {naive_boot:.1f} s")
    print(f"\nspeed-up: full grid {naive_full / fit_s:.0f}x, bootstrap {naive_boot / boot_s:.0f}x")


if __name__ == "__main__":
    main()
