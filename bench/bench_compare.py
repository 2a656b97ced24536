"""Benchmark of the multiplier's estimator (llm_ray.fitting.compare) against a plain loop.

Two synthetic sweeps (Chinchilla's law, 5 budgets x 7 sizes, B = A at 1.5 C; as in
tests/test_compare_math.py), 400 bootstrap replicates of each:
1. llm-ray: every replicate's parabolas, frontier and inverse at once (moments and batched solves);
2. the plain way: per replicate, np.polyfit per budget, np.polyfit for A's frontier, np.roots to invert.
Both give the same multipliers (checked); the ratio is what vectorising buys in the calibration loop
(100 draws x 2 multipliers) and on every `python -m llm_ray.compare`.

    python bench/bench_compare.py [--repeats 5] [--resamples 400]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llm_ray.core.comparison import CompareConfig  # noqa: E402
from llm_ray.fitting.compare import compare_sweeps, replicate_losses  # noqa: E402
from llm_ray.fitting.compare import SweepPoints  # noqa: E402

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def sweep(k: float, rng) -> SweepPoints:
    f, n, l = [], [], []
    for c in 10 ** np.arange(18, 20.01, 0.5):
        g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
        ns = g * (c / 6) ** (BETA / (ALPHA + BETA)) * 10 ** np.linspace(-0.6, 0.6, 7)
        f.append(np.full(7, c))
        n.append(ns)
        l.append(E + A / ns**ALPHA + B / (k * c / (6 * ns)) ** BETA + rng.normal(0, 0.01, 7))
    f = np.concatenate(f)
    return SweepPoints.from_arrays(f, np.concatenate(n), np.concatenate(l), f)


def plain(a: SweepPoints, b: SweepPoints, resamples: int, seed: int) -> np.ndarray:
    """log k at B's budgets, one replicate at a time."""
    ya, yb = (replicate_losses(p, resamples, s, "residuals")[1] for p, s in ((a, seed), (b, seed + 1)))
    ca, cb = np.log(a.group_flops()), np.log(b.group_flops())
    out = np.empty((len(ya), b.n_groups))
    for r in range(len(ya)):
        la = [vertex(a, ya[r], g) for g in range(a.n_groups)]
        lb = [vertex(b, yb[r], g) for g in range(b.n_groups)]
        q, c, l = np.polyfit(ca - ca.mean(), np.log(la), 2)
        for j, y in enumerate(np.log(lb)):
            roots = np.roots([q, c, l - y])
            real = roots[np.isreal(roots)].real
            falling = real[c + 2 * q * real < 0]
            out[r, j] = falling[0] + ca.mean() - cb[j] if len(falling) else np.nan
    return out


def vertex(p: SweepPoints, y: np.ndarray, g: int) -> float:
    m = p.group == g
    u = np.log(p.params[m])
    u = u - 0.5 * (u.min() + u.max())
    c2, c1, c0 = np.polyfit(u, y[m], 2)
    return c0 - c1**2 / (4 * c2)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=400)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a, b = sweep(1.0, rng), sweep(1.5, rng)
    cfg = CompareConfig(n_resamples=args.resamples)
    fast = best_of(lambda: compare_sweeps(a, b, cfg), args.repeats)
    slow = best_of(lambda: plain(a, b, args.resamples, 0), max(1, args.repeats // 2))
    k_plain = np.exp(plain(a, b, args.resamples, 0)[0])
    k_fast = [row.k.value for row in compare_sweeps(a, b, cfg).budgets]
    assert np.allclose(k_plain, k_fast, rtol=1e-6), (k_plain, k_fast)
    print(f"{args.resamples} replicates of 2 sweeps x 35 runs (cpus: {os.cpu_count()}, "
          f"load: {os.getloadavg()[0]:.1f})")
    print(f"{'llm-ray (vectorised, whole comparison)':45s} {1e3 * fast:9.1f} ms")
    print(f"{'plain loop (minima, frontier, inverse only)':45s} {1e3 * slow:9.1f} ms")
    print(f"{'ratio plain / llm-ray':45s} {slow / fast:9.1f}x")


if __name__ == "__main__":
    main()
