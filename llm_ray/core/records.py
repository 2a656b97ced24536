"""The records that pass between stages: what training writes and what analysis reads.

Like Marin's `IsoFlopRecord`, these are the contract between experiment code and analysis code:
a training run writes one `RunRecord` (result.json), the results table is made of its
`EvalPoint`s, the fitter's answer is read back as a `FitRecord` (fit.json). JSON and Parquet
appear only at the edges (`to_json` / `from_json`), each with a schema version, so a reader
never indexes a dict by a string it might misspell.

Pure: no torch, Ray, Hydra or W&B here.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

from llm_ray.core.config import DeepSpeedConfig, ModelConfig, TrainJobConfig, job_from_record
from llm_ray.core.plan import Cell, Dropped, SweepConfig

RUN_SCHEMA = 1
"""Version of result.json; bump when a field changes meaning (readers refuse newer ones)."""
FIT_SCHEMA = 1
APPROACHES = ("approach1", "approach2", "approach3")
FINISHED = ("ok", "diverged")
"""A diverged cell is an answer (that size cannot use that budget); a failed one is retried."""
STATUSES = FINISHED + ("failed",)
"""Every status a result.json may hold (`missing` exists only in memory, for a cell without one)."""
REQUIRED_OK = ("params", "tokens", "steps", "flops_exact", "model", "history")
"""What every `ok` record training writes holds: a record without one of them is not a finished run
(hand-edited, truncated, or written by something else) and is refused, never counted as done."""
MOVE_AWAY = "move the file away (or delete the cell's directory) and re-run the command, which retrains that cell"


def parse_record(text: str | bytes, where: str) -> "RunRecord":
    """The RunRecord in a result.json's text; a ValueError naming `where` (its path) and the fix when
    the text is no JSON object or the record lacks what its status needs."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{where}: not valid JSON ({e}): {MOVE_AWAY}.") from None
    try:
        return RunRecord.from_json(data)
    except ValueError as e:
        raise ValueError(f"{where}: {e}: {MOVE_AWAY}.") from None


def _known(cls, d: Mapping[str, Any]) -> dict:
    """The entries of `d` that are fields of `cls` (a file written by a newer llm-ray may hold more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _check_schema(found: int, supported: int, what: str) -> None:
    if found > supported:
        raise ValueError(f"{what} has schema {found}, newer than this llm-ray reads ({supported}): "
                         f"upgrade llm-ray to read it.")


def bits_per_byte(loss_nats_per_token: float, bytes_per_token: Optional[float]) -> float:
    """bpb = L * tokens / (bytes * ln 2) = L / (ln 2 * bytes per token) over the evaluated text: a
    loss that does not depend on the tokenizer, so sweeps over different tokenizers or corpora
    compare (Gao et al. 2020, The Pile, Sec. 4). NaN when the bytes are unknown."""
    if not bytes_per_token or loss_nats_per_token is None:
        return math.nan
    return float(loss_nats_per_token) / (math.log(2) * float(bytes_per_token))


def loss_standard_error(n: float, total: float, total_sq: float) -> float:
    """sd / sqrt(n) of n per-window mean losses given their sum and sum of squares (NaN below 2
    windows). Windows cut from one text are not independent (a topic spans several), so this is a
    lower bound on the evaluation's noise; windows are fixed across cells, so it does not enter
    comparisons between cells, only the gap between one measured loss and the population's."""
    if n < 2:
        return math.nan
    var = max(0.0, (total_sq - total * total / n) / (n - 1))
    return math.sqrt(var / n)


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
    val_bpb: float = math.nan
    """The validation loss in bits per byte of the evaluated text (`bits_per_byte`)."""
    val_loss_se: float = math.nan
    """Standard error of val_loss over its held-out windows (`loss_standard_error`)."""


CELL_KEYS = tuple(f.name for f in fields(Cell))
CELL_REQUIRED = {f.name for f in fields(Cell) if f.default is MISSING and f.default_factory is MISSING}


@dataclass(frozen=True)
class RunCell:
    """result.json's `cell`: the sweep cell a run trained (all empty for a single run): its id, its
    sweep, the planned `Cell`, and for a wsd_branches run its trunk and where it branched or saved."""

    cell_id: str = ""
    sweep: str = ""
    name: str = ""
    planned: Optional[Cell] = None
    """The plan's cell (budget C, shape, N, D, lr, batch...), None for a single run."""
    trunk: Optional[str] = None
    branch_start: Optional[int] = None
    """A branch: the trunk step it started from."""
    saves: Optional[tuple] = None
    """A trunk's carrier: the steps at which it saved branch points."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so that writing the record back loses nothing."""

    @property
    def budget(self) -> Optional[float]:
        return self.planned.budget if self.planned else None

    @classmethod
    def from_json(cls, d: Optional[Mapping[str, Any]]) -> "RunCell":
        d = dict(d or {})
        planned = Cell(**{k: d[k] for k in CELL_KEYS if k in d}) if CELL_REQUIRED <= set(d) else None
        own = ("cell_id", "sweep", "name", "trunk", "branch_start", "saves")
        extra = {k: v for k, v in d.items() if k not in own and not (planned and k in CELL_KEYS)}
        return cls(cell_id=d.get("cell_id", ""), sweep=d.get("sweep", ""), name=d.get("name", ""), planned=planned,
                   trunk=d.get("trunk"), branch_start=d.get("branch_start"),
                   saves=tuple(d["saves"]) if d.get("saves") is not None else None, extra=extra)

    def to_json(self) -> dict:
        """The mapping as the trainer wrote it: id, sweep, name, the cell's fields, then the trunk's."""
        out = {k: v for k, v in (("cell_id", self.cell_id), ("sweep", self.sweep), ("name", self.name)) if v}
        if self.planned is not None:
            out.update(asdict(self.planned))
        out.update({k: v for k, v in (("trunk", self.trunk), ("saves", list(self.saves) if self.saves is not None
                                                              else None), ("branch_start", self.branch_start))
                    if v is not None})
        return {**out, **self.extra}


def _typed(cls, value):
    """A component config from the mapping result.json holds ({} or None: none)."""
    if value is None or isinstance(value, cls):
        return value
    return cls(**value) if value else None


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
    """Nats per token on the fixed held-out windows."""
    final_val_bpb: Optional[float] = None
    """The same loss in bits per byte of the held-out text (`bits_per_byte`)."""
    final_val_loss_se: Optional[float] = None
    """Standard error of final_val_loss over its held-out windows (`loss_standard_error`): the
    evaluation's own noise, to set beside the seed-to-seed spread."""
    val_bytes_per_token: Optional[float] = None
    """UTF-8 bytes of text per target token of the held-out windows (what bpb divides by)."""
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
    cell: RunCell = field(default_factory=RunCell)
    """The sweep cell this run trained (empty for a single run); a mapping given here is read as one."""
    model: Optional[ModelConfig] = None
    deepspeed: Optional[DeepSpeedConfig] = None
    job: Optional[TrainJobConfig] = None
    """The run's whole training config: later stages rebuild from it (None for a run that failed early)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The prepared data it trained on (PreparedData as a dict, `llm_ray.data.PreparedData.from_dict`:
    tokenizer, shards, token counts; its `key` names the content)."""
    history: tuple = ()
    """Every logged step as written to metrics.json (dicts: step, tokens, flops_*, losses, lr...)."""
    schema: int = RUN_SCHEMA

    def __post_init__(self) -> None:
        # Writers hand the parts over as mappings (dataclasses.asdict of their configs): typed here.
        if not isinstance(self.cell, RunCell):
            object.__setattr__(self, "cell", RunCell.from_json(self.cell))
        object.__setattr__(self, "model", _typed(ModelConfig, self.model))
        object.__setattr__(self, "deepspeed", _typed(DeepSpeedConfig, self.deepspeed))
        if self.job is not None and not isinstance(self.job, TrainJobConfig):
            object.__setattr__(self, "job", job_from_record(self.job) if self.job else None)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def data_key(self) -> Optional[str]:
        """The content key of the prepared data the run trained on."""
        return self.data.get("key")

    def eval_points(self) -> list[EvalPoint]:
        """Evaluations after step 0 (the untrained model is no point of L(N, D)), in step order."""
        names = {f.name for f in fields(EvalPoint)}
        return [EvalPoint(**{k: v for k, v in row.items() if k in names and v is not None})
                for row in self.history if row.get("val_loss") is not None and row["step"] > 0]

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(cell=self.cell.to_json(), history=list(self.history), data=dict(self.data),
                   **{k: asdict(getattr(self, k)) if getattr(self, k) is not None else {}
                      for k in ("model", "deepspeed", "job")})
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunRecord":
        """The record in result.json's parsed JSON; a ValueError when it is not a complete record."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a run record is a JSON object, not {type(d).__name__}")
        if not isinstance(d.get("run_id"), str) or d.get("status") not in STATUSES:
            raise ValueError(f"a run record needs a run_id and a status in {STATUSES} "
                             f"(found run_id={d.get('run_id')!r}, status={d.get('status')!r})")
        if d["status"] == "ok":
            missing = [k for k in REQUIRED_OK if d.get(k) in (None, {}, [], ())]
            if missing:
                raise ValueError(f"status 'ok' without {', '.join(missing)}: not a record of a finished run")
        _check_schema(int(d.get("schema", 1)), RUN_SCHEMA, "result.json")
        values = _known(cls, d)
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
    """(low, high), or None where there is no interval (missing, or NaN: every bootstrap refit failed)."""
    if not value or None in value or not all(math.isfinite(float(v)) for v in value):
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
    noise_dof: Optional[int] = None
    """Degrees of freedom behind noise_sd (None in fit.json files written before it was recorded)."""

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
    config: Mapping[str, Any] = field(default_factory=dict)
    """The settings the fit was made with (FitConfig.to_dict(); `llm_ray.fitting.FitConfig.from_json`
    rebuilds it): a re-fit with the same table and config is the same fit."""

    @property
    def predict_flops(self) -> list:
        """The budgets the fit was asked to forecast (its config's predict_flops)."""
        return [float(c) for c in self.config.get("predict_flops") or ()]

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
                   plots=tuple(d.get("plots") or ()), config=dict(d["config"]))


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


# --------------------------------------------------------------------------------------------
# The plan (plan.json), typed
# --------------------------------------------------------------------------------------------

def _cell(d: Mapping[str, Any]) -> Cell:
    return Cell(**{k: d[k] for k in CELL_KEYS if k in d})


@dataclass(frozen=True)
class PlanRecord:
    """plan.json: the sweep's settings, every planned cell by its content-keyed id, the dropped cells
    with their reasons, the table printed before training and the FLOPs it would spend."""

    sweep: SweepConfig
    cells: Mapping[str, Cell] = field(default_factory=dict)
    """cell_id (`C2e11-N87.4k-3f9a1c2b7e`) -> the planned cell, in plan order."""
    train_tokens: Optional[int] = None
    """Tokens in the train split the plan was sized on (None: a dry run, data not prepared)."""
    dropped: tuple = ()
    """Dropped per cell the plan left out, with why."""
    table: str = ""
    """The plan as printed before launching."""
    flops_to_spend: Mapping[str, float] = field(default_factory=dict)
    """Exact-ledger FLOPs of the plan: `independent` runs, `wsd_branches` (= `trunks` + `cooldowns`)."""
    trunks: Optional[tuple] = None
    """sweep.schedule=wsd_branches: the shared trunks (name, steps, branch points, cells), else None."""
    replicates: Mapping[str, Cell] = field(default_factory=dict)
    """sweep.replicate_minima: cell_id -> each budget's minimum trained again with another seed (fitted
    like the cells; their spread is the run-to-run noise)."""
    val_lines_in_train: Optional[float] = None
    """Share of the validation split's long lines that the training split also holds
    (llm_ray.data.overlap; None: a dry run, or a corpus prepared before it was measured)."""

    @property
    def name(self) -> str:
        """The sweep's name: its directory under the storage path and its W&B group."""
        return self.sweep.name

    def to_json(self) -> dict:
        out = {"sweep": asdict(self.sweep), "train_tokens": self.train_tokens,
               "cells": {cid: {**asdict(c), "name": c.name} for cid, c in self.cells.items()},
               "dropped": [asdict(d) for d in self.dropped], "table": self.table,
               "flops_to_spend": dict(self.flops_to_spend), "val_lines_in_train": self.val_lines_in_train}
        if self.trunks is not None:
            out["trunks"] = [dict(t) for t in self.trunks]
        if self.replicates:
            out["replicates"] = {cid: {**asdict(c), "name": c.name} for cid, c in self.replicates.items()}
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PlanRecord":
        return cls(sweep=SweepConfig(**_known(SweepConfig, d["sweep"])), train_tokens=d.get("train_tokens"),
                   cells={cid: _cell(c) for cid, c in (d.get("cells") or {}).items()},
                   dropped=tuple(Dropped(**_known(Dropped, x)) for x in d.get("dropped") or ()),
                   table=d.get("table", ""), flops_to_spend=dict(d.get("flops_to_spend") or {}),
                   trunks=tuple(d["trunks"]) if d.get("trunks") is not None else None,
                   replicates={cid: _cell(c) for cid, c in (d.get("replicates") or {}).items()},
                   val_lines_in_train=d.get("val_lines_in_train"))


# --------------------------------------------------------------------------------------------
# Registered forecasts (predictions.json), typed
# --------------------------------------------------------------------------------------------

PREDICTIONS_SCHEMA = 1


@dataclass(frozen=True)
class Prediction:
    """One approach's registered loss for one held-out run, with its interval."""

    approach: str
    loss: float
    ci: Interval = None

    def to_json(self) -> dict:
        return {"approach": self.approach, "loss": self.loss, "ci": list(self.ci) if self.ci else None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Prediction":
        return cls(approach=d["approach"], loss=d["loss"], ci=_interval(d.get("ci")))


@dataclass(frozen=True)
class HeldOutRun:
    """A model a registration trains at its budget: the cell, who chose it, every approach's forecast."""

    cell_id: str
    chosen_by: tuple
    """The approaches whose N_opt this run trains."""
    n_opt: float
    cell: Cell
    forecasts: Mapping[str, Prediction] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"cell_id": self.cell_id, "chosen_by": list(self.chosen_by), "n_opt": self.n_opt,
                "cell": asdict(self.cell), "forecasts": {k: p.to_json() for k, p in self.forecasts.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "HeldOutRun":
        return cls(cell_id=d["cell_id"], chosen_by=tuple(d.get("chosen_by") or ()), n_opt=d["n_opt"],
                   cell=_cell(d["cell"]),
                   forecasts={k: Prediction.from_json(p) for k, p in (d.get("forecasts") or {}).items()})


@dataclass(frozen=True)
class DroppedRun:
    """A model a registration could not train at its budget (the plan's rules refused its shape)."""

    params: int
    chosen_by: tuple
    reason: str

    def to_json(self) -> dict:
        return {"params": self.params, "chosen_by": list(self.chosen_by), "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DroppedRun":
        return cls(params=d["params"], chosen_by=tuple(d.get("chosen_by") or ()), reason=d.get("reason", ""))


@dataclass(frozen=True)
class RegisteredPrimary:
    """The primary forecast registered for a held-out budget: the chosen approach's loss at the run that
    trains the chosen N, its interval widened by the backtest error and the seed noise, and the rule."""

    rule: str
    """`backtest` (leave the top budget out) or `fallback` (llm_ray.fitting.primary)."""
    n_from: str
    loss_from: str
    cell_id: str
    """The held-out run it is checked on."""
    loss: float
    ci: Interval = None
    why: str = ""
    margin: float = 0.0
    noise_sd: Optional[float] = None
    agrees_with: tuple = ()

    def to_json(self) -> dict:
        return {**asdict(self), "ci": list(self.ci) if self.ci else None, "agrees_with": list(self.agrees_with)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RegisteredPrimary":
        return cls(**{**_known(cls, d), "ci": _interval(d.get("ci")), "agrees_with": tuple(d.get("agrees_with") or ())})


@dataclass(frozen=True)
class Registration:
    """One fit's forecasts for one held-out budget C, written before any of its runs trained and
    never modified after (predictions.json keeps them in the order registered)."""

    fit_key: str
    """What the forecast was made from (the fitted runs' final losses and the fit's settings)."""
    registered_at: str
    ci_level: float
    flops: float
    frontier: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Each approach's N_opt, D_opt and L at C, with intervals (as `predict_budgets` gives them)."""
    runs: tuple = ()
    """HeldOutRun per model to train at C."""
    dropped: tuple = ()
    """DroppedRun per model the plan could not train at C."""
    primary: Optional["RegisteredPrimary"] = None
    """The one forecast to bet on at C (llm_ray.fitting.primary), at the run that trains its N."""

    def to_json(self) -> dict:
        out = {"fit_key": self.fit_key, "registered_at": self.registered_at, "ci_level": self.ci_level,
               "flops": self.flops, "frontier": {k: dict(v) for k, v in self.frontier.items()},
               "runs": [r.to_json() for r in self.runs], "dropped": [d.to_json() for d in self.dropped]}
        if self.primary is not None:
            out["primary"] = self.primary.to_json()
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Registration":
        return cls(fit_key=d["fit_key"], registered_at=d.get("registered_at", ""), ci_level=float(d["ci_level"]),
                   flops=float(d["flops"]), frontier=dict(d.get("frontier") or {}),
                   runs=tuple(HeldOutRun.from_json(r) for r in d.get("runs") or ()),
                   dropped=tuple(DroppedRun.from_json(x) for x in d.get("dropped") or ()),
                   primary=RegisteredPrimary.from_json(d["primary"]) if d.get("primary") else None)


def registrations_from_json(d: Mapping[str, Any]) -> list:
    """predictions.json -> its Registrations, in the order they were registered."""
    _check_schema(int(d.get("schema", 1)), PREDICTIONS_SCHEMA, "predictions.json")
    return [Registration.from_json(r) for r in d.get("registrations") or ()]


def registrations_to_json(registrations: list) -> dict:
    return {"schema": PREDICTIONS_SCHEMA, "registrations": [r.to_json() for r in registrations]}


# --------------------------------------------------------------------------------------------
# One fine-tune of the downstream stage (downstream/<task>-<key>/runs/<row id>/result.json), typed
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FinetuneResult:
    """A fine-tune's test scores (or why it failed): written whole at its end, read back by the stage."""

    row_id: str
    kind: str
    """`pretrained` (a sweep cell's weights) or `scratch` (the same shape, fresh weights)."""
    status: str
    """`ok`, or `failed` (retried by the next run of the stage)."""
    reason: Optional[str] = None
    """Why it failed (None when ok)."""
    accuracy: Optional[float] = None
    accuracy_lo: Optional[float] = None
    accuracy_hi: Optional[float] = None
    """Clopper-Pearson interval of the accuracy at the stage's ci_level."""
    macro_f1: Optional[float] = None
    n: Optional[int] = None
    """Test examples scored."""
    n_correct: Optional[int] = None
    n_train: Optional[int] = None
    train_s: Optional[float] = None
    steps: Optional[int] = None
    train_loss: Optional[float] = None
    eval_s: Optional[float] = None
    pid: Optional[int] = None
    predictions: Optional[tuple] = None
    """The predicted class of every test example, in the split's order."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.predictions is not None:
            out["predictions"] = list(self.predictions)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FinetuneResult":
        values = _known(cls, d)
        if values.get("predictions") is not None:
            values["predictions"] = tuple(values["predictions"])
        return cls(**values)
