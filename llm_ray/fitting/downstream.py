"""Downstream accuracy as a function of pre-training: scores with intervals, the loss -> accuracy
sigmoid, and the two-step forecast compute -> loss -> accuracy.

- Accuracy on a test split of n examples is a binomial proportion: its interval is Clopper-Pearson's
  exact interval (scipy's `binomtest(...).proportion_ci(method="exact")`).
- Accuracy against pre-training validation loss L follows a sigmoid between chance and a ceiling
  (Llama 3, arXiv 2407.21783, Sec. 3.2.1; OLMo ladder, Bhagia et al. 2024, arXiv 2412.04403, eq. 2):

      acc(L) = floor + (ceiling - floor) / (1 + exp(slope * (L - midpoint)))

  with `floor` fixed at chance (the majority class's accuracy on the balanced test split), and
  ceiling in [floor, 1], slope >= 0 fitted by least squares (scipy's `least_squares`).
- Two-step forecast at a budget C: approach 3's compute-optimal loss L_opt(C) (llm_ray.fitting) fed
  through the sigmoid. Its interval pairs the r-th bootstrap replicate of the scaling law with the
  r-th bootstrap replicate of the sigmoid (cells resampled with replacement), so both sources of
  uncertainty reach the forecast.

Pure: numpy, scipy and scikit-learn's metrics; no torch, Ray or W&B.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

from llm_ray.fitting.bootstrap import percentile_interval


class Scores(NamedTuple):
    """Accuracy with its binomial interval, and macro-F1, on n test examples."""

    accuracy: float
    accuracy_lo: float
    accuracy_hi: float
    macro_f1: float
    n: int
    n_correct: int


def binomial_interval(k: int, n: int, level: float) -> tuple:
    """Clopper-Pearson exact interval of a proportion k / n at coverage `level`."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def widest_halfwidth(n: int, level: float) -> float:
    """Half-width of the widest interval n test examples can give (at accuracy 1/2)."""
    lo, hi = binomial_interval(n // 2, n, level)
    return (hi - lo) / 2


def min_test_size(halfwidth: float, level: float) -> int:
    """Smallest n whose widest interval is at most +-halfwidth (normal approximation, then checked
    against the exact interval)."""
    from scipy.stats import norm

    z = norm.ppf((1 + level) / 2)
    n = max(2, math.ceil((z / (2 * halfwidth)) ** 2))
    while widest_halfwidth(n, level) > halfwidth:
        n += max(1, n // 100)
    return n


def classification_scores(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int, level: float) -> Scores:
    """Accuracy (with its Clopper-Pearson interval) and macro-F1 over the classes 0..n_classes-1
    (scikit-learn's metrics; a class never predicted scores F1 = 0)."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n, k = len(y_true), int((y_true == y_pred).sum())
    lo, hi = binomial_interval(k, n, level)
    f1 = f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0)
    return Scores(float(accuracy_score(y_true, y_pred)), lo, hi, float(f1), n, k)


# --------------------------------------------------------------------------------------------
# Accuracy vs pre-training loss
# --------------------------------------------------------------------------------------------

class SigmoidFit(NamedTuple):
    """acc(L) = floor + (ceiling - floor) / (1 + exp(slope * (L - midpoint))); floor fixed."""

    floor: float
    ceiling: float
    midpoint: float
    slope: float
    rmse: float
    n: int

    def params(self) -> np.ndarray:
        return np.array([self.ceiling, self.midpoint, self.slope])


def sigmoid(loss, floor: float, params) -> np.ndarray:
    """acc at `loss` for (ceiling, midpoint, slope) rows `params` ((3,) or (R, 3) with loss (R,) or scalar)."""
    p = np.asarray(params, dtype=np.float64)
    ceiling, midpoint, slope = p[..., 0], p[..., 1], p[..., 2]
    with np.errstate(over="ignore"):
        return floor + (ceiling - floor) / (1 + np.exp(slope * (np.asarray(loss) - midpoint)))


def fit_sigmoid(loss: Sequence[float], acc: Sequence[float], floor: float,
                start: Optional[np.ndarray] = None) -> SigmoidFit:
    """Least-squares sigmoid through (L, acc) points, from a small grid of starts (the best wins), or
    from `start` alone (a bootstrap replicate, warm-started from the full fit). Needs at least 3
    points (3 free parameters)."""
    from scipy.optimize import least_squares

    x, y = np.asarray(loss, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    if len(x) < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"the loss -> accuracy sigmoid needs at least 3 finite (loss, accuracy) points; got {len(x)}.")
    span = max(float(np.ptp(x)), 1e-3)
    lower, upper = [floor, x.min() - 3 * span, 0.0], [1.0, x.max() + 3 * span, 200.0 / span]
    starts = [start] if start is not None else [
        [ceiling, midpoint, slope] for ceiling in (min(1.0, y.max() + 0.02), 1.0)
        for midpoint in np.quantile(x, [0.25, 0.5, 0.75]) for slope in (1.0 / span, 5.0 / span, 20.0 / span)]
    best = None
    for p0 in starts:
        res = least_squares(lambda p: sigmoid(x, floor, p) - y, np.clip(p0, lower, upper), bounds=(lower, upper))
        if best is None or res.cost < best.cost:
            best = res
    rmse = float(np.sqrt(2 * best.cost / len(x)))
    return SigmoidFit(float(floor), *(float(v) for v in best.x), rmse, len(x))


def fitted_span(fit: SigmoidFit, loss: Sequence[float]) -> float:
    """How far the fitted curve moves over the measured losses (max - min of acc(L) there). Below the
    cells' own binomial noise the data show no dependence on the loss: the curve sits on one of its
    flat arms, and its slope and midpoint are not identified (any far-away midpoint fits as well)."""
    x = np.linspace(float(np.min(loss)), float(np.max(loss)), 101)
    y = sigmoid(x, fit.floor, fit.params())
    return float(y.max() - y.min())


def sigmoid_samples(fit: SigmoidFit, loss: Sequence[float], acc: Sequence[float], n_resamples: int,
                    seed: int) -> np.ndarray:
    """(R, 3) bootstrap replicates of (ceiling, midpoint, slope): cells drawn with replacement, each
    replicate refitted from the full fit; one with fewer than 3 distinct points is NaN."""
    x, y = np.asarray(loss, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.full((n_resamples, 3), np.nan)
    for r in range(n_resamples):
        idx = rng.integers(0, len(x), size=len(x))
        if len(np.unique(idx)) >= 3:
            out[r] = fit_sigmoid(x[idx], y[idx], fit.floor, start=fit.params()).params()
    return out


class AccuracyForecast(NamedTuple):
    """Two-step forecast at compute C: the law's loss L_opt(C), then accuracy through the sigmoid."""

    flops: float
    loss: float
    loss_ci: Optional[tuple]
    accuracy: float
    accuracy_ci: Optional[tuple]


def forecast_accuracy(fit: SigmoidFit, samples: Optional[np.ndarray], flops: Sequence[float],
                      loss: Sequence[float], loss_samples: Optional[np.ndarray], level: float) -> list:
    """Accuracy at each budget from the loss forecast `loss[j]`; intervals from replicate pairs
    (sigmoid replicate r, law replicate r: `samples` (R, 3) and `loss_samples` (R, J))."""
    point = sigmoid(np.asarray(loss), fit.floor, fit.params())
    acc_band = loss_band = None
    if samples is not None and loss_samples is not None:
        r = min(len(samples), len(loss_samples))
        reps = sigmoid(loss_samples[:r], fit.floor, samples[:r, None, :])  # (R, J)
        acc_band, loss_band = percentile_interval(reps, level), percentile_interval(loss_samples[:r], level)
    out = []
    for j, c in enumerate(flops):
        out.append(AccuracyForecast(
            float(c), float(loss[j]), None if loss_band is None else (float(loss_band[0][j]), float(loss_band[1][j])),
            float(point[j]), None if acc_band is None else (float(acc_band[0][j]), float(acc_band[1][j]))))
    return out
