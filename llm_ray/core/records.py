"""The records that pass between stages: what training writes and what analysis reads.

Like Marin's `IsoFlopRecord`, these are the contract between experiment code and analysis code:
a training run writes one `RunRecord` (result.json), the results table is made of its
`EvalPoint`s, the fitter's answer is read back as a `FitRecord` (fit.json). JSON and Parquet
appear only at the edges (`to_json` / `from_json`), each with a schema version, so a reader
never indexes a dict by a string it might misspell.

Pure: no torch, Ray, Hydra or W&B here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

RUN_SCHEMA = 1
"""Version of result.json; bump when a field changes meaning (readers refuse newer ones)."""
FIT_SCHEMA = 1
APPROACHES = ("approach1", "approach2", "approach3")
FINISHED = ("ok", "diverged")
"""A diverged cell is an answer (that size cannot use that budget); a failed one is retried."""


def _check_schema(found: int, supported: int, what: str) -> None:
    if found > supported:
        raise ValueError(f"{what} has schema {found}, newer than this llm-ray reads ({supported}): "
                         f"upgrade llm-ray to read it.")


@dataclass(frozen=True)
class EvalPoint:
    """One held-out evaluation of a run: the unit of L(N, D) data."""

    step: int
    tokens: float
    """Tokens D seen when the loss was measured."""
    flops_exact: float
    flops_kaplan: float
    flops_deepseek: float
    val_loss: float
    train_loss: float = math.nan
    lr: float = math.nan


@dataclass(frozen=True)
class RunRecord:
    """result.json: what one training run did (or why it did not)."""

    run_id: str
    status: str
    """`ok`, `diverged` (stopped by the divergence rule; an answer), or `failed` (an error)."""
    reason: str = ""
    params: Optional[int] = None
    """N: every trainable parameter (exact ledger = sum(p.numel()))."""
    params_non_embedding: Optional[int] = None
    tokens: Optional[float] = None
    """D: tokens trained on."""
    steps: Optional[int] = None
    flops_exact: Optional[float] = None
    """C by the exact ledger (the one the sweep budgets); Kaplan's 6 N D and DeepSeek's M D beside it."""
    flops_kaplan: Optional[float] = None
    flops_deepseek: Optional[float] = None
    final_train_loss: Optional[float] = None
    final_val_loss: Optional[float] = None
    wall_s: Optional[float] = None
    startup_s: Optional[float] = None
    t_worker_start: Optional[float] = None
    t_first_step: Optional[float] = None
    t_last_step: Optional[float] = None
    t_end: Optional[float] = None
    train_time_s: Optional[float] = None
    tokens_per_s: Optional[float] = None
    mfu: Optional[float] = None
    peak_flops_per_worker: Optional[float] = None
    world_size: Optional[int] = None
    resumed_from_step: Optional[int] = None
    pid: Optional[int] = None
    local_param_fraction: Optional[float] = None
    epochs: Optional[float] = None
    """D / tokens in the train split: how often the run saw its data (> 1: repeated tokens)."""
    n_spikes: int = 0
    """Loss spikes the divergence rule counted and the run survived (llm_ray.core.divergence)."""
    max_spike: Optional[float] = None
    weights: Optional[str] = None
    """File name of the final weights beside result.json (weights.pt), None if not saved."""
    cell: Mapping[str, Any] = field(default_factory=dict)
    """The sweep cell this run trained (empty for a single run)."""
    model: Mapping[str, Any] = field(default_factory=dict)
    deepspeed: Mapping[str, Any] = field(default_factory=dict)
    job: Mapping[str, Any] = field(default_factory=dict)
    """The run's whole training config (TrainJobConfig as a dict): later stages rebuild from it."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The prepared data it trained on (PreparedData as a dict: tokenizer, shards, token counts)."""
    history: tuple = ()
    """Every logged step as written to metrics.json (dicts: step, tokens, flops_*, losses, lr...)."""
    schema: int = RUN_SCHEMA

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def eval_points(self) -> list[EvalPoint]:
        """Evaluations after step 0 (the untrained model is no point of L(N, D)), in step order."""
        names = {f.name for f in fields(EvalPoint)}
        return [EvalPoint(**{k: v for k, v in row.items() if k in names and v is not None})
                for row in self.history if row.get("val_loss") is not None and row["step"] > 0]

    def to_json(self) -> dict:
        out = asdict(self)
        out["history"] = list(self.history)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunRecord":
        _check_schema(int(d.get("schema", 1)), RUN_SCHEMA, "result.json")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["history"] = tuple(d.get("history") or ())
        return cls(**values)

    @classmethod
    def failed(cls, run_id: str, reason: str, cell: Mapping[str, Any]) -> "RunRecord":
        return cls(run_id=run_id, status="failed", reason=reason[:2000], cell=dict(cell))


# --------------------------------------------------------------------------------------------
# The fit (fit.json), read back typed
# --------------------------------------------------------------------------------------------

Interval = Optional[tuple]
"""(low, high) of a bootstrap percentile interval, or None when there is none."""


def _interval(value) -> Interval:
    if not value or None in value:
        return None
    return (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class IsoFlopMinimum:
    """Approach 2's parabola vertex for one budget."""

    label: str
    flops: Optional[float]
    n_opt: Optional[float]
    d_opt: Optional[float]
    loss_opt: Optional[float]
    inside: bool
    n_min: Optional[float]
    n_max: Optional[float]
    note: str = ""


@dataclass(frozen=True)
class ApproachResult:
    """One approach's fit: the exponents, approach 3's law, intervals; or why it was skipped."""

    name: str
    """approach1, approach2 or approach3."""
    status: str
    """`ok`, `skipped` (with the reason) or `missing` (not in fit.json)."""
    reason: str = ""
    ci: Mapping[str, Interval] = field(default_factory=dict)
    """Bootstrap interval of each parameter below, by name."""
    budgets: tuple = ()
    """Approach 2: an IsoFlopMinimum per budget."""
    a: Optional[float] = None
    """N_opt ∝ C^a."""
    b: Optional[float] = None
    """D_opt ∝ C^b."""
    E: Optional[float] = None
    """Approach 3: L(N, D) = E + A / N^alpha + B / D^beta; E is the floor no budget gets under."""
    A: Optional[float] = None
    B: Optional[float] = None
    alpha: Optional[float] = None
    """Approach 3: exponent of N."""
    beta: Optional[float] = None
    """Approach 3: exponent of D."""
    k_loss: Optional[float] = None
    """Approaches 1 and 2: the frontier's loss law L_opt(C) = k_loss * C^loss_exponent."""
    loss_exponent: Optional[float] = None
    converged: Optional[bool] = None
    grad_norm: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return f"approach {self.name[-1]}"

    def law(self) -> tuple:
        """(E, A, B, alpha, beta) of approach 3."""
        return (self.E, self.A, self.B, self.alpha, self.beta)


@dataclass(frozen=True)
class BudgetForecast:
    """What one approach says to train for compute C, and the loss it predicts there."""

    approach: str
    flops: float
    n_opt: float
    d_opt: float
    loss: float
    ci: Mapping[str, Interval] = field(default_factory=dict)


@dataclass(frozen=True)
class PointForecast:
    """Approach 3's L(N, D) at a given point."""

    params: float
    tokens: float
    loss: float
    ci: Interval = None


@dataclass(frozen=True)
class PrimaryForecast:
    """The one forecast for budget C, chosen by a rule fixed before any held-out run
    (llm_ray.fitting.primary): train n_opt on d_opt, expect loss within ci."""

    flops: float
    n_opt: float
    d_opt: float
    loss: float
    ci: Interval
    rule: str
    """`backtest` (leave the top budget out) or `fallback`."""
    n_from: str
    """The approach whose N_opt is trained."""
    loss_from: str
    """The approach whose loss is forecast."""
    why: str = ""
    agrees_with: tuple = ()
    margin: float = 0.0
    """The backtest error, carried to C, folded into ci (relative)."""
    noise_sd: Optional[float] = None
    """The run-to-run standard deviation folded into ci (None: no replicated cells)."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PrimaryForecast":
        values = {f.name: d.get(f.name) for f in fields(cls) if f.name in d}
        return cls(**{**values, "ci": _interval(d.get("ci")), "agrees_with": tuple(d.get("agrees_with") or ())})


@dataclass(frozen=True)
class FitRecord:
    """fit.json read back: every approach, the forecasts, the warnings; or the error."""

    approaches: Mapping[str, ApproachResult] = field(default_factory=dict)
    forecasts: tuple = ()
    """BudgetForecast per (budget, approach), budgets in the order asked."""
    point_forecasts: tuple = ()
    primary: tuple = ()
    """PrimaryForecast per budget, in the order asked: the forecast to bet on (the others are diagnostics)."""
    warnings: tuple = ()
    ci_level: float = 0.9
    """Coverage of every interval (0.9: 5th to 95th bootstrap percentile)."""
    n_resamples: int = 0
    """Bootstrap resamples behind the intervals (0: no intervals)."""
    flops_per_param_token: float = 6.0
    """k in C = k N D that approach 3's closed-form frontier used."""
    n_used: int = 0
    """Points fitted (all evaluations), of n_runs runs; n_excluded rows left out (by reason in excluded)."""
    excluded: Mapping[str, int] = field(default_factory=dict)
    n_runs: int = 0
    n_excluded: int = 0
    plots: tuple = ()
    error: Optional[str] = None
    """Set when no fit was possible (then everything else is empty)."""

    def approach(self, name: str) -> ApproachResult:
        return self.approaches.get(name) or ApproachResult(name=name, status="missing")

    def primary_at(self, flops: float) -> Optional[PrimaryForecast]:
        return next((p for p in self.primary if p.flops == flops), None)

    def forecasts_at(self, flops: float) -> dict:
        """approach name -> BudgetForecast at this budget."""
        return {f.approach: f for f in self.forecasts if f.flops == flops}

    @property
    def budgets(self) -> list:
        return list(dict.fromkeys(f.flops for f in self.forecasts))

    @classmethod
    def failed(cls, error: str) -> "FitRecord":
        return cls(error=error)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FitRecord":
        if "error" in d:
            return cls.failed(str(d["error"]))
        _check_schema(int(d.get("schema", 1)), FIT_SCHEMA, "fit.json")
        forecasts = tuple(_forecast(name, float(row["flops"]), row[name])
                          for row in d.get("predictions", []) for name in APPROACHES if row.get(name))
        points = tuple(PointForecast(p["params"], p["tokens"], p["loss"], _interval(p.get("ci")))
                       for p in d.get("loss_predictions", []))
        summary = d.get("input", {})
        return cls(approaches={name: _approach(name, d.get(name) or {}) for name in APPROACHES},
                   forecasts=forecasts, point_forecasts=points,
                   primary=tuple(PrimaryForecast.from_json(p) for p in d.get("primary") or ()), warnings=tuple(d.get("warnings", [])),
                   ci_level=float(d["bootstrap"]["level"]), n_resamples=int(d["bootstrap"]["n_resamples"]),
                   flops_per_param_token=float(d["config"]["flops_per_param_token"]),
                   n_used=int(summary.get("n_used", 0)), n_runs=int(summary.get("n_runs", 0)),
                   n_excluded=int(d.get("n_excluded", 0)), excluded=dict(summary.get("excluded") or {}),
                   plots=tuple(d.get("plots") or ()))


def _forecast(name: str, flops: float, p: Mapping[str, Any]) -> BudgetForecast:
    return BudgetForecast(approach=name, flops=flops, n_opt=p["n_opt"], d_opt=p["d_opt"], loss=p["loss"],
                          ci={k: _interval(v) for k, v in (p.get("ci") or {}).items()})


def _approach(name: str, entry: Mapping[str, Any]) -> ApproachResult:
    if not entry:
        return ApproachResult(name=name, status="missing")
    scalars = {k: entry.get(k) for k in ("a", "b", "E", "A", "B", "alpha", "beta", "k_loss", "loss_exponent",
                                         "converged", "grad_norm")}
    budgets = tuple(IsoFlopMinimum(label=str(g.get("label")), flops=g.get("flops"), n_opt=g.get("n_opt"),
                                   d_opt=g.get("d_opt"), loss_opt=g.get("loss_opt"), inside=bool(g.get("inside")),
                                   n_min=g.get("n_min"), n_max=g.get("n_max"), note=g.get("note") or "")
                    for g in entry.get("budgets") or ())
    return ApproachResult(name=name, status=entry.get("status", "missing"), reason=entry.get("reason") or "",
                          ci={k: _interval(v) for k, v in (entry.get("ci") or {}).items()},
                          budgets=budgets, **scalars)


# --------------------------------------------------------------------------------------------
# Held-out validation (validation.json), read back typed
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForecastCheck:
    """One approach's registered forecast for one held-out run, against what the run measured."""

    flops: float
    cell_id: str
    params: int
    tokens: float
    chosen_by: tuple
    """The approaches whose N_opt this run trains (approach 3's, and approach 2's where it differs)."""
    approach: str
    predicted: float
    ci: Interval
    measured: Optional[float]
    """The run's final validation loss; None when it did not finish ok."""
    status: str
    error: Optional[float] = None
    """(predicted - measured) / measured."""
    inside: Optional[bool] = None
    """Whether the measured loss lies inside the forecast's interval."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ForecastCheck":
        values = {f.name: d.get(f.name) for f in fields(cls)}
        return cls(**{**values, "ci": _interval(d.get("ci")), "chosen_by": tuple(d.get("chosen_by") or ())})
