"""Bootstrap over runs: confidence intervals for every fitted parameter and every prediction.

The unit of resampling is the run (rows sharing a `run_id`; each row is its own run when the table
has none): a run's intermediate evaluations are not independent measurements, so they are drawn
together. With `stratify`, runs are drawn with replacement *within* each IsoFLOP group, so every
replicate keeps the sweep's design (the same number of runs per budget); otherwise from all runs.

Drawing a run k times is the same as weighting its rows by k, so a replicate is a weight vector over
runs (`draw_run_counts`) and every approach refits with weights:
- approach 1 keeps the rows of the drawn runs (duplicates do not change a minimum);
- approach 2 weights each run's squared residual in its group's parabola;
- approach 3 weights each point's Huber term, and all replicates are refitted together by the batched
  L-BFGS, warm-started from the full fit (Efron & Tibshirani 1993, ch. 13: percentile intervals).

A replicate where an approach cannot be fitted (e.g. a group drew fewer than 3 sizes) gives NaN for
that approach and is counted as failed; the interval uses the rest.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from llm_ray.fitting.approaches import fit_envelope, fit_isoflop
from llm_ray.fitting.parametric import refit_batch


def draw_run_counts(n_runs: int, n_resamples: int, seed: int, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """(R, n_runs) integer counts: how often each run is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, n_runs), dtype=np.int64)
    groups = [np.arange(n_runs)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for members in groups:
        draws = rng.integers(0, len(members), size=(n_resamples, len(members)))
        np.add.at(counts, (np.arange(n_resamples)[:, None], members[draws]), 1)  # all replicates at once
    return counts


def percentile_interval(samples: np.ndarray, level: float):
    """Lower and upper percentile bounds per column of (R, ...) samples, ignoring replicates with any
    NaN (failed fits). 1-D samples give two floats; NaN bounds when no replicate succeeded."""
    samples = np.asarray(samples, dtype=np.float64)
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    ok = np.isfinite(samples).reshape(len(samples), -1).all(axis=1)
    if not ok.any():
        nan = np.full(samples.shape[1:], np.nan)
        return (float("nan"), float("nan")) if samples.ndim == 1 else (nan, nan)
    lo, hi = np.percentile(samples[ok], q, axis=0)
    return (float(lo), float(hi)) if samples.ndim == 1 else (lo, hi)


def envelope_samples(points, run_index: np.ndarray, counts: np.ndarray, bin_dex: float,
                     min_sizes: int = 3) -> np.ndarray:
    """Approach 1 refitted per replicate: (R, 6) frontier vectors, NaN where it failed."""
    out = np.full((len(counts), 6), np.nan)
    for r, run_counts in enumerate(counts):
        try:
            fit = fit_envelope(points["flops"], points["params"], points["tokens"], points["loss"],
                               bin_dex=bin_dex, min_sizes=min_sizes, weights=run_counts[run_index])
        except ValueError:
            continue
        out[r] = fit.laws.vector()
    return out


def isoflop_samples(final, groups: np.ndarray, counts: np.ndarray, *, min_sizes: int,
                    exclude_edge_minima: bool) -> np.ndarray:
    """Approach 2 refitted per replicate: (R, 6) frontier vectors, NaN where it failed."""
    out = np.full((len(counts), 6), np.nan)
    for r, w in enumerate(counts):
        try:
            fit = fit_isoflop(final["flops"], final["params"], final["tokens"], final["loss"], groups,
                              min_sizes=min_sizes, exclude_edge_minima=exclude_edge_minima, weights=w)
        except ValueError:
            continue
        out[r] = fit.laws.vector()
    return out


def parametric_samples(final, theta0: np.ndarray, counts: np.ndarray, *, delta: float) -> np.ndarray:
    """Approach 3 refitted per replicate from the full fit: (R, 5) rows (E, A, B, alpha, beta)."""
    params, ok = refit_batch(theta0, final["params"], final["tokens"], final["loss"], counts, delta=delta)
    params[~ok] = np.nan
    return params
