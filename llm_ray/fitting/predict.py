"""Predictions with intervals: N_opt, D_opt and L for a budget C from each approach, L(N, D) from approach 3.

Every approach is summarised by one parameter vector, so a point prediction and its bootstrap
interval come from the same function applied to the full fit and to each replicate:
- approaches 1 and 2: (log k_N, a, log k_D, b, log k_L, c) with N_opt = k_N C^a, D_opt = k_D C^b,
  L_opt = k_L C^c (`approaches.frontier_from_vector`);
- approach 3: (E, A, B, alpha, beta) with the closed form of Hoffmann et al. 2022 eq. 4 under
  C = k N D (`parametric.frontier`).
The interval of a prediction is the percentile interval of that prediction over the replicates (not a
combination of the parameters' intervals).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from llm_ray.fitting.approaches import frontier_from_vector
from llm_ray.fitting.bootstrap import percentile_interval
from llm_ray.fitting.parametric import frontier as parametric_frontier
from llm_ray.fitting.parametric import loss_nd

PARAMETRIC = "approach3"


def frontier_of(approach: str, params: np.ndarray, c, k: float):
    """(N_opt, D_opt, L_opt) at C for one parameter vector (5 or 6 entries) or rows of them."""
    with np.errstate(all="ignore"):
        if approach == PARAMETRIC:
            return parametric_frontier(params, c, k)
        return frontier_from_vector(params, c)


class BudgetPrediction(NamedTuple):
    """What to train for compute C, and the loss it should reach; ci maps each to (lo, hi)."""

    flops: float
    n_opt: float
    d_opt: float
    loss: float
    ci: Optional[dict]

    def as_dict(self) -> dict:
        out = {"flops": self.flops, "n_opt": self.n_opt, "d_opt": self.d_opt, "loss": self.loss}
        if self.ci is not None:
            out["ci"] = {k: list(v) for k, v in self.ci.items()}
        return out


def predict_budgets(approach: str, params: np.ndarray, samples: Optional[np.ndarray], flops: Sequence[float],
                    *, level: float, k: float) -> list[BudgetPrediction]:
    """Predictions at each C in ``flops``; ``samples`` (R, P) are the bootstrap parameter vectors."""
    c = np.asarray(flops, dtype=np.float64)
    point = frontier_of(approach, np.asarray(params), c, k)
    bands = None
    if samples is not None and len(c):
        bands = [percentile_interval(v, level) for v in frontier_of(approach, samples, c, k)]
    out = []
    for j, cj in enumerate(c):
        ci = None
        if bands is not None:
            ci = {name: (float(lo[j]), float(hi[j])) for name, (lo, hi) in zip(("n_opt", "d_opt", "loss"), bands)}
        out.append(BudgetPrediction(float(cj), float(point[0][j]), float(point[1][j]), float(point[2][j]), ci))
    return out


def frontier_band(approach: str, samples: Optional[np.ndarray], c, *, level: float, k: float):
    """Pointwise intervals of (N_opt, D_opt, L_opt) over a grid of C, for plots; None without samples."""
    if samples is None:
        return None
    return [percentile_interval(v, level) for v in frontier_of(approach, samples, np.asarray(c), k)]


class LossPrediction(NamedTuple):
    """Approach 3's L(N, D) at a given model size and token count."""

    params: float
    tokens: float
    loss: float
    ci: Optional[tuple]

    def as_dict(self) -> dict:
        out = {"params": self.params, "tokens": self.tokens, "loss": self.loss}
        if self.ci is not None:
            out["ci"] = list(self.ci)
        return out


def predict_losses(params: np.ndarray, samples: Optional[np.ndarray], points: Sequence[Sequence[float]],
                   *, level: float) -> list[LossPrediction]:
    """L(N, D) = E + A / N^alpha + B / D^beta at each (N, D), with its bootstrap interval."""
    if len(points) == 0:
        return []
    nd = np.asarray(points, dtype=np.float64)
    point = loss_nd(np.asarray(params), nd[:, 0], nd[:, 1])
    lo = hi = None
    if samples is not None:
        lo, hi = percentile_interval(loss_nd(samples, nd[:, 0], nd[:, 1]), level)
    return [LossPrediction(float(n), float(d), float(point[j]),
                           None if lo is None else (float(lo[j]), float(hi[j])))
            for j, (n, d) in enumerate(nd)]
