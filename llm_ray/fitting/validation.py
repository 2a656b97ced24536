"""Does the law hold? Forecasts checked against runs the fit never saw.

A fitted law is only as good as its error on a budget it never saw (Marin's "Delphi" and the GPT-4
report registered their forecasts before training the run they forecast). For a held-out budget C
each approach predicts a loss: approach 3 at the (N, D) actually trained, L(N, D) = E + A/N^alpha +
B/D^beta; approaches 1 and 2 on their frontier, L_opt(C) = k_L C^c. Each prediction carries the
bootstrap percentile interval of that same prediction over the replicates. The measured loss then
either lies inside the interval or not, and the relative error says by how much the forecast missed.

Pure numpy: no Ray, torch, W&B or Hydra.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from llm_ray.fitting.predict import predict_budgets, predict_losses

PARAMETRIC = "approach3"


class LossForecast(NamedTuple):
    """One approach's predicted loss for one held-out run, with its interval (None without samples)."""

    approach: str
    loss: float
    ci: Optional[tuple]


def forecast_loss(approach: str, params: np.ndarray, samples: Optional[np.ndarray], *, n: float, d: float,
                  c: float, level: float, k: float) -> LossForecast:
    """What `approach` predicts for a run of N parameters on D tokens at compute C: L(N, D) for the
    parametric law, L_opt(C) for the frontier laws of approaches 1 and 2."""
    if approach == PARAMETRIC:
        p = predict_losses(params, samples, [[n, d]], level=level)[0]
        return LossForecast(approach, p.loss, p.ci)
    p = predict_budgets(approach, params, samples, [c], level=level, k=k)[0]
    return LossForecast(approach, p.loss, None if p.ci is None else p.ci["loss"])


def relative_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured: +0.02 means the forecast was 2% too pessimistic."""
    return (predicted - measured) / measured


def inside(ci: Optional[Sequence[float]], value: float) -> Optional[bool]:
    """Whether `value` lies in the closed interval; None when there is no interval."""
    if ci is None or not math.isfinite(value):
        return None
    return bool(ci[0] <= value <= ci[1])


def overlap(a: Optional[Sequence[float]], b: Optional[Sequence[float]]) -> Optional[bool]:
    """Whether two intervals share a point; None when either is missing."""
    if a is None or b is None:
        return None
    return bool(max(a[0], b[0]) <= min(a[1], b[1]))


def disagreements(intervals: Mapping[str, Optional[Sequence[float]]]) -> list[tuple[str, str]]:
    """Pairs of approaches whose intervals for the same quantity do not overlap: the fit does not
    know the answer to better than their disagreement."""
    names = sorted(intervals)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if overlap(intervals[a], intervals[b]) is False]


class Check(NamedTuple):
    """One approach's forecast for one held-out run against its measurement."""

    approach: str
    predicted: float
    ci: Optional[tuple]
    measured: float

    @property
    def error(self) -> float:
        return relative_error(self.predicted, self.measured)

    @property
    def inside(self) -> Optional[bool]:
        return inside(self.ci, self.measured)


def best_supported(checks: Iterable[Check]) -> Optional[str]:
    """The approach the measurements support: the most measurements inside its interval, then the
    smallest mean absolute relative error; None without measurements."""
    by: dict[str, list[Check]] = {}
    for c in checks:
        if math.isfinite(c.measured):
            by.setdefault(c.approach, []).append(c)
    if not by:
        return None
    return min(by, key=lambda a: (-sum(bool(c.inside) for c in by[a]),
                                  float(np.mean([abs(c.error) for c in by[a]]))))


def models_to_validate(n_opt: Mapping[str, float], *, differ: float = 1.25,
                       first: Optional[str] = None) -> list[tuple[float, tuple]]:
    """The model sizes to train at a held-out budget, each with the approaches that recommend it:
    `first`'s N_opt (the primary forecast's), then approach 3's and approach 2's where they differ from
    every size already chosen by more than the factor `differ` (both ways); without `first`, approach
    3's leads, else approach 2's, else approach 1's."""
    order = [a for a in ("approach3", "approach2", "approach1") if n_opt.get(a) and math.isfinite(n_opt[a])]
    if not order:
        return []
    lead = first if first in order else order[0]
    out = [(n_opt[lead], (lead,))]
    for a in ("approach3", "approach2"):
        if a in order and a != lead and all(not 1 / differ <= n_opt[a] / n <= differ for n, _ in out):
            out.append((n_opt[a], (a,)))
    return out
