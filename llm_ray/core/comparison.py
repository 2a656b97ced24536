"""Comparing two variants by their laws: the config (`compare.*`) and the record (compare.json).

`CompareConfig` is what `python -m llm_ray.compare` reads under `compare.`; `CompareRecord` is
compare.json read back typed, the contract between the comparison and whoever reads it (the report,
W&B, a notebook). The math is in `llm_ray.fitting.compare`.

Pure: no torch, Ray, Hydra or W&B here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

from llm_ray.core.choices import check_choice

COMPARE_SCHEMA = 1
METRICS = ("auto", "loss", "bpb")
RESAMPLE = ("residuals", "runs")


@dataclass
class CompareConfig:
    """How two sweeps are compared (`python -m llm_ray.compare sweep_dirs=[A,B] compare.key=value`)."""

    target_flops: list = field(default_factory=list)
    """Budgets C to carry the multiplier to along its trend; empty: 10x the largest budget measured."""
    labels: list = field(default_factory=list)
    """Names of A and B in the report; empty: the sweep directories' names."""
    metric: str = "auto"
    """`loss` (held-out nats per token), `bpb` (bits per byte, the `bpb` column), or `auto`: loss when
    both sweeps share a tokenizer, bits per byte when they do not (a token is then not the same unit)."""
    ci_level: float = 0.9
    """Coverage of every interval (0.9: the bias-corrected 5th to 95th percentile)."""
    n_resamples: int = 400
    """Bootstrap replicates of each sweep."""
    seed: int = 0
    resample: str = "residuals"
    """`residuals`: each run's residual from its budget's parabola is resampled (pooled over the sweep);
    `runs`: the runs themselves, within each budget (the fitter's bootstrap). llm_ray.fitting.compare."""
    min_sizes: int = 3
    """Distinct model sizes a budget needs for its parabola."""
    same_budget_dex: float = 0.02
    """Budgets of the two sweeps closer than this in log10 C are one budget."""

    def __post_init__(self) -> None:
        check_choice("compare.metric", self.metric, METRICS)
        check_choice("compare.resample", self.resample, RESAMPLE)
        if not 0 < self.ci_level < 1:
            raise ValueError(f"compare.ci_level={self.ci_level}: give a coverage in (0, 1), e.g. 0.9.")
        if self.n_resamples < 20:
            raise ValueError(f"compare.n_resamples={self.n_resamples}: use at least 20 (400 by default).")
        if self.min_sizes < 3:
            raise ValueError(f"compare.min_sizes={self.min_sizes}: a parabola needs at least 3 sizes.")
        if any(float(c) <= 0 for c in self.target_flops):
            raise ValueError(f"compare.target_flops={list(self.target_flops)}: give positive budgets, e.g. [1e14].")
        if self.labels and len(self.labels) != 2:
            raise ValueError(f"compare.labels={list(self.labels)}: give two names, A's and B's, e.g. [beta2_0.999,beta2_0.95].")


Interval = Optional[tuple]


def _interval(value) -> Interval:
    return None if not value or None in value else (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class BudgetMultiplier:
    """The multiplier at one budget of either sweep."""

    flops: float
    in_a: bool
    in_b: bool
    b_measured: bool
    """k puts B's measured IsoFLOP minimum through A's frontier; else it is the trend's value here."""
    in_trend: bool
    k: float
    k_ci: Interval
    n_opt_ratio: Optional[float] = None
    """N_opt of B over A's at this C, where both measured a minimum inside their sizes."""
    n_opt_ratio_ci: Interval = None
    loss_a: Optional[float] = None
    loss_b: Optional[float] = None


@dataclass(frozen=True)
class TargetMultiplier:
    """The trend carried to a target budget, and the two sweeps' N_opt laws compared there."""

    flops: float
    k: float
    k_ci: Interval
    n_opt_ratio: float
    n_opt_ratio_ci: Interval

    @property
    def excludes_one(self) -> Optional[bool]:
        return None if self.k_ci is None else not self.k_ci[0] <= 1.0 <= self.k_ci[1]


@dataclass(frozen=True)
class FloorShift:
    """E of each sweep's approach-3 fit (fit.json) and whether both are identified."""

    e_a: Optional[float]
    e_a_ci: Interval
    e_b: Optional[float]
    e_b_ci: Interval
    identified: bool
    """Both fits give E with an interval that stays above 0 and is narrower than E itself."""
    note: str = ""


@dataclass(frozen=True)
class CompareRecord:
    """compare.json: what B is worth in A's compute, per budget, its trend and at the targets."""

    labels: tuple
    sweep_dirs: tuple
    metric: str
    """`loss` (nats per token) or `bpb` (bits per byte)."""
    budgets: tuple
    slope: float
    """d log10 k / d log10 C: k changes by the factor 10^slope per decade of compute."""
    slope_ci: Interval
    trend: str
    """`constant`, `growing`, `fading` (the slope's interval excludes 0) or `unknown`."""
    centre_flops: float
    """The geometric centre of B's budgets, where the trend is best pinned."""
    centre_k: float
    centre_ci: Interval
    targets: tuple
    trend_band: tuple = ()
    """(C, k, low, high) along the trend, from the smallest budget to the largest target (for plots)."""
    floor: Optional[FloorShift] = None
    frontier_a: str = "curved"
    ci_level: float = 0.9
    n_resamples: int = 0
    resample: str = "residuals"
    residual_dof: float = 0.0
    notes: tuple = ()
    schema: int = COMPARE_SCHEMA

    def to_json(self) -> dict:
        out = asdict(self)
        out["targets"] = [{**asdict(t), "excludes_one": t.excludes_one} for t in self.targets]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CompareRecord":
        if int(d.get("schema", 1)) > COMPARE_SCHEMA:
            raise ValueError(f"compare.json has schema {d['schema']}, newer than this llm-ray reads "
                             f"({COMPARE_SCHEMA}): upgrade llm-ray to read it.")
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        values["budgets"] = tuple(_typed(BudgetMultiplier, b) for b in d["budgets"])
        values["targets"] = tuple(_typed(TargetMultiplier, t) for t in d["targets"])
        values["floor"] = _typed(FloorShift, d["floor"]) if d.get("floor") else None
        values["trend_band"] = tuple(tuple(row) for row in d.get("trend_band") or ())
        for key in ("labels", "sweep_dirs", "notes"):
            values[key] = tuple(d.get(key) or ())
        for key in ("slope_ci", "centre_ci"):
            values[key] = _interval(d.get(key))
        return cls(**values)


def _typed(cls, d: Mapping[str, Any]):
    names = {f.name for f in fields(cls)}
    return cls(**{k: (_interval(v) if k.endswith("_ci") else v) for k, v in d.items() if k in names})
