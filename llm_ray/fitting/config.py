"""Typed configuration of the scaling-law fitter.

`FitConfig` is the one object a caller (the Hydra CLI in `llm_ray.fit`, the sweep, a notebook) hands to
`llm_ray.fitting.run_fit`. It is a plain dataclass: Hydra registers it as a structured config, but this
module imports no Hydra, so the fitting math stays importable and testable on its own. Every field has
a docstring; `__post_init__` rejects bad values with a `ValueError` that names the field and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, List

# Epoch AI's initialisation grid for approach 3 (Besiroglu et al. 2024, "Chinchilla Scaling: A
# replication attempt"): 5 x 5 x 5 x 6 x 6 = 4,500 starts.
EPOCH_ALPHA_GRID = [0.0, 0.5, 1.0, 1.5, 2.0]
EPOCH_BETA_GRID = [0.0, 0.5, 1.0, 1.5, 2.0]
EPOCH_E_GRID = [-1.0, -0.5, 0.0, 0.5, 1.0]
EPOCH_A_GRID = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
EPOCH_B_GRID = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]

DEFAULT_COLUMNS = {
    "params": "params",
    "tokens": "tokens",
    "flops": "flops",
    "loss": "loss",
    "budget": "budget",
    "run_id": "run_id",
    "step": "step",
    "status": "status",
}


@dataclass
class ColumnMap:
    """Names of the table's columns, so that other people's tables load without editing.

    `params` and `loss` are required, and at least one of `tokens` and `flops` (the other is then
    derived with C = k * N * D, k = `FitConfig.flops_per_param_token`). The optional columns
    (`budget`, `run_id`, `step`, `status`) are used when present; a missing optional column is an error
    only when its name was changed from the default (you asked for it, so it should be there).
    Set an optional column to "" to ignore it even when present.
    """

    params: str = "params"
    """Parameter count N of the model (e.g. "Model Size")."""
    tokens: str = "tokens"
    """Training tokens D seen at this point (e.g. "Training Tokens")."""
    flops: str = "flops"
    """Training compute C in FLOPs at this point (e.g. "Training FLOP")."""
    loss: str = "loss"
    """Loss L in nats/token (evaluation or final training loss)."""
    budget: str = "budget"
    """IsoFLOP group of the run (approach 2); without it rows are grouped by their FLOPs."""
    run_id: str = "run_id"
    """Run identifier: rows of one run are one bootstrap unit; without it every row is a run."""
    step: str = "step"
    """Training step of an intermediate evaluation; the last step of a run is its final point."""
    status: str = "status"
    """Run status; rows whose status is not in `FitConfig.ok_status` are excluded and counted."""


@dataclass
class FitConfig:
    """Everything the fitter needs besides the table itself."""

    columns: ColumnMap = field(default_factory=ColumnMap)
    """Column names of the input table (see `ColumnMap`)."""
    format: str = "auto"
    """Table format: "csv", "parquet", or "auto" (from the file name's suffix)."""
    ok_status: List[str] = field(default_factory=lambda: ["ok"])
    """Status values that are fitted; any other status excludes the row (and it is counted)."""
    drop_top_loss: int = 0
    """Exclude the k highest-loss runs before fitting (Epoch's outlier rule on Chinchilla: k = 5)."""
    flops_per_param_token: Any = 6.0
    """k in C = k * N * D (Kaplan et al. 2020; Hoffmann et al. 2022 eq. 4 use 6), for deriving a
    missing tokens/flops column and for approach 3's closed-form N_opt(C), D_opt(C). `auto`: the
    median C / (N D) of the fitted points, i.e. the table's own FLOP ledger (llm-ray's sweeps use
    it: their exact ledger counts the LM head, so C / (N D) is not 6 for small models)."""

    envelope_bin_dex: float = 0.05
    """Approach 1: width in log10 C of the compute bins in which the lowest loss is taken."""
    envelope_min_sizes: int = 3
    """Approach 1: the envelope needs at least this many distinct model sizes, else it is skipped."""
    flops_group_dex: float = 0.02
    """Approach 2 without a budget column: runs whose log10 C differ by at most this (chained, sorted)
    form one IsoFLOP group."""
    isoflop_min_sizes: int = 3
    """Approach 2: a budget group needs at least this many distinct N to fit its parabola."""
    isoflop_exclude_edge_minima: bool = True
    """Approach 2: leave out of the power-law fit the budgets whose parabola minimum lies outside the
    sampled N range (an extrapolated minimum; the ladder must be widened)."""

    huber_delta: float = 1e-3
    """Approach 3: delta of the Huber loss on log L (Hoffmann et al. 2022 Sec. 3.3: 1e-3)."""
    alpha_grid: List[float] = field(default_factory=lambda: list(EPOCH_ALPHA_GRID))
    """Approach 3: initial values of alpha (exponent of N)."""
    beta_grid: List[float] = field(default_factory=lambda: list(EPOCH_BETA_GRID))
    """Approach 3: initial values of beta (exponent of D)."""
    e_grid: List[float] = field(default_factory=lambda: list(EPOCH_E_GRID))
    """Approach 3: initial values of e = log E."""
    a_grid: List[float] = field(default_factory=lambda: list(EPOCH_A_GRID))
    """Approach 3: initial values of a = log A."""
    b_grid: List[float] = field(default_factory=lambda: list(EPOCH_B_GRID))
    """Approach 3: initial values of b = log B."""
    prune_iters: int = 5
    """Approach 3: batched L-BFGS iterations every start gets before the starts are ranked."""
    keep_starts: int = 50
    """Approach 3: how many of the best-ranked starts are run to convergence (0 = all of them)."""
    converged_gtol: float = 1e-5
    """Approach 3: the fit counts as converged when max|grad| / (delta * n) is at most this."""

    n_bootstrap: int = 200
    """Bootstrap resamples (over runs) for the confidence intervals; 0 disables the intervals."""
    ci_level: float = 0.9
    """Coverage of the reported percentile intervals (0.9: 5th to 95th percentile)."""
    bootstrap_stratify: bool = True
    """Resample runs within each IsoFLOP group, so every replicate keeps the sweep's design."""
    seed: int = 0
    """Seed of the bootstrap's random generator (fits are otherwise deterministic)."""

    predict_flops: List[float] = field(default_factory=list)
    """Compute budgets C [FLOPs] for which N_opt, D_opt and L are predicted by each approach."""
    predict_points: List[List[float]] = field(default_factory=list)
    """[N, D] pairs at which approach 3 predicts the loss L(N, D)."""
    plots: bool = True
    """Write the PNG plots next to fit.json."""

    def __post_init__(self) -> None:
        if isinstance(self.columns, dict):
            self.columns = ColumnMap(**self.columns)
        _check(self.format in ("auto", "csv", "parquet"), "format", self.format,
               'use "auto", "csv" or "parquet"')
        _check(len(self.ok_status) > 0, "ok_status", self.ok_status, 'list at least one status, e.g. ["ok"]')
        _check(self.drop_top_loss >= 0, "drop_top_loss", self.drop_top_loss, "use 0 or a positive count")
        _check(self.flops_per_param_token == "auto" or _pos(self.flops_per_param_token), "flops_per_param_token",
               self.flops_per_param_token, "use a positive factor such as 6.0, or auto")
        for name in ("envelope_bin_dex", "flops_group_dex", "huber_delta", "converged_gtol"):
            _check(_pos(getattr(self, name)), name, getattr(self, name), "use a positive number")
        _check(self.envelope_min_sizes >= 2, "envelope_min_sizes", self.envelope_min_sizes,
               "a power law through the envelope needs at least 2 sizes (3 recommended)")
        _check(self.isoflop_min_sizes >= 3, "isoflop_min_sizes", self.isoflop_min_sizes,
               "a parabola needs at least 3 sizes")
        for name in ("alpha_grid", "beta_grid", "e_grid", "a_grid", "b_grid"):
            values = getattr(self, name)
            _check(len(values) > 0 and all(math.isfinite(v) for v in values), name, values,
                   "give at least one finite starting value")
        _check(self.prune_iters >= 0, "prune_iters", self.prune_iters, "use 0 or more iterations")
        _check(self.keep_starts >= 0, "keep_starts", self.keep_starts, "use 0 (all) or a positive count")
        _check(self.n_bootstrap >= 0, "n_bootstrap", self.n_bootstrap, "use 0 (no intervals) or more")
        _check(0.0 < self.ci_level < 1.0, "ci_level", self.ci_level, "use a level in (0, 1), e.g. 0.9")
        _check(all(_pos(c) for c in self.predict_flops), "predict_flops", self.predict_flops,
               "give positive FLOP budgets, e.g. [1e21, 1e22]")
        _check(all(len(p) == 2 and _pos(p[0]) and _pos(p[1]) for p in self.predict_points),
               "predict_points", self.predict_points, "give [N, D] pairs of positive numbers")

    def with_flops_per_param_token(self, median_ratio: float) -> "FitConfig":
        """This config with `auto` replaced by the table's median C / (N D) (a number stays)."""
        if self.flops_per_param_token != "auto":
            return self
        return replace(self, flops_per_param_token=float(median_ratio))

    @classmethod
    def from_json(cls, d: dict, **overrides) -> "FitConfig":
        """The config a fit.json recorded (`FitRecord.config`, written by `to_dict`), with `overrides`:
        the one way a stage rebuilds the fit it re-does (keys a newer llm-ray wrote are left out)."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, **overrides})

    def to_dict(self) -> dict:
        """Plain JSON-able dict (recorded in fit.json so a fit can be reproduced)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(vars(value)) if isinstance(value, ColumnMap) else value
        out["predict_flops"] = [float(c) for c in self.predict_flops]
        out["predict_points"] = [[float(v) for v in p] for p in self.predict_points]
        return out


def _pos(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check(ok: bool, name: str, value, fix: str) -> None:
    if not ok:
        raise ValueError(f"fit.{name} = {value!r} is invalid: {fix}.")
