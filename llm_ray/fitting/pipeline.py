"""`fit_all` + `summarize`: load a table, fit all three approaches, and the fit.json dict (written by
`llm_ray.reporting.fit.run_fit`, which also draws the plots).

Each approach fails on its own: a `ValueError` from one (too few budgets, too few points, ...) is
recorded as {"status": "skipped", "reason": ...} and the others still run. Errors of the table itself
(missing columns, non-positive N, D or C, nothing left after exclusions) are raised, since no approach
can run. Approaches 2 and 3 fit the final point of each run; approach 1 uses every point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from llm_ray.core.records import FIT_SCHEMA
from llm_ray.fitting import bootstrap as boot
from llm_ray.fitting.approaches import (EnvelopeFit, IsoFlopFit, budget_groups, fit_envelope, fit_isoflop,
                                       profile_bumps)
from llm_ray.fitting.config import FitConfig
from llm_ray.fitting.parametric import ParametricFit, epoch_grid, fit_parametric
from llm_ray.fitting.predict import predict_budgets, predict_losses
from llm_ray.fitting import primary as prim
from llm_ray.fitting.table import FitTable, Source, load_table

APPROACHES = ("approach1", "approach2", "approach3")
LAW_NAMES = ("log_k_n", "a", "log_k_d", "b", "log_k_loss", "loss_exponent")
PARAMETRIC_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass
class FitOutcome:
    """Everything `run_fit` computed, for the plots and for callers that want more than the JSON."""

    cfg: FitConfig
    table: FitTable
    final: pd.DataFrame
    """Final point of each run (approaches 2 and 3)."""
    groups: np.ndarray
    """IsoFLOP group label of each row of `final`."""
    grouping: str
    envelope: Optional[EnvelopeFit] = None
    isoflop: Optional[IsoFlopFit] = None
    parametric: Optional[ParametricFit] = None
    samples: dict = field(default_factory=dict)
    """approach name -> (R, P) bootstrap parameter vectors (NaN rows: failed replicates)."""
    skipped: dict = field(default_factory=dict)
    """approach name -> reason it was skipped."""
    backtest: Optional[prim.Backtest] = None
    """Each approach refitted without the top budget, against its measured minimum (the primary rule)."""
    noise_sd: Optional[float] = None
    """Run-to-run standard deviation of the final loss over replicated cells (None: none replicated)."""
    noise_dof: int = 0
    """Its degrees of freedom."""

    def params_of(self, approach: str) -> Optional[np.ndarray]:
        """The full fit's parameter vector in the form `predict.frontier_of` takes."""
        if approach == "approach1" and self.envelope is not None:
            return self.envelope.laws.vector()
        if approach == "approach2" and self.isoflop is not None:
            return self.isoflop.laws.vector()
        if approach == "approach3" and self.parametric is not None:
            p = self.parametric
            return np.array([p.E, p.A, p.B, p.alpha, p.beta])
        return None

    def fitted_params(self) -> dict:
        """approach name -> parameter vector, for the approaches that were fitted."""
        return {a: p for a in APPROACHES if (p := self.params_of(a)) is not None}

    def primary(self, flops) -> list:
        """The primary forecast (fitting.primary) at each C in `flops`."""
        cfg, params = self.cfg, self.fitted_params()
        if not params or self.backtest is None:
            return []
        out = []
        for c in flops:
            cands = prim.candidates_at(float(c), params, self.samples, level=cfg.ci_level, k=cfg.flops_per_param_token)
            choice = prim.choose(cands, self.backtest, noise_sd=self.noise_sd)
            out.append(prim.primary_at(float(c), choice, self.backtest, params, self.samples, noise=self.noise_sd,
                                       level=cfg.ci_level, k=cfg.flops_per_param_token, noise_dof=self.noise_dof))
        return out


def fit_all(source: Source, cfg: FitConfig) -> FitOutcome:
    """Load and fit the three approaches with their bootstrap samples (no files written)."""
    table = load_table(source, cfg)
    cfg = cfg.with_flops_per_param_token(float(np.median(
        table.points["flops"] / (table.points["params"] * table.points["tokens"]))))
    final = table.final_points().reset_index(drop=True)
    budget = final["budget"].tolist() if table.present["budget"] else None
    groups, grouping = budget_groups(final["flops"].to_numpy(), budget, cfg.flops_group_dex)
    out = FitOutcome(cfg=cfg, table=table, final=final, groups=groups, grouping=grouping)

    counts = None
    if cfg.n_bootstrap > 0:
        counts = boot.draw_run_counts(len(final), cfg.n_bootstrap, cfg.seed,
                                      strata=groups if cfg.bootstrap_stratify else None)
    run_index = pd.Index(final["run_id"]).get_indexer(table.points["run_id"])
    pts = table.points

    try:
        out.envelope = fit_envelope(pts["flops"], pts["params"], pts["tokens"], pts["loss"],
                                    bin_dex=cfg.envelope_bin_dex, min_sizes=cfg.envelope_min_sizes)
        if counts is not None:
            out.samples["approach1"] = boot.envelope_samples(pts, run_index, counts, cfg.envelope_bin_dex,
                                                             cfg.envelope_min_sizes)
    except ValueError as err:
        out.skipped["approach1"] = str(err)
    try:
        kw = dict(min_sizes=cfg.isoflop_min_sizes, exclude_edge_minima=cfg.isoflop_exclude_edge_minima)
        out.isoflop = fit_isoflop(final["flops"], final["params"], final["tokens"], final["loss"], groups, **kw)
        if counts is not None:
            out.samples["approach2"] = boot.isoflop_samples(final, groups, counts, **kw)
    except ValueError as err:
        out.skipped["approach2"] = str(err)
    try:
        grid = epoch_grid(cfg.alpha_grid, cfg.beta_grid, cfg.e_grid, cfg.a_grid, cfg.b_grid)
        out.parametric = fit_parametric(final["params"], final["tokens"], final["loss"], delta=cfg.huber_delta,
                                        grid=grid, prune_iters=cfg.prune_iters, keep_starts=cfg.keep_starts,
                                        gtol=cfg.converged_gtol, flops_per_param_token=cfg.flops_per_param_token)
        if counts is not None:
            out.samples["approach3"] = boot.parametric_samples(final, out.parametric.theta, counts,
                                                               delta=cfg.huber_delta)
    except ValueError as err:
        out.skipped["approach3"] = str(err)
    out.noise_sd, out.noise_dof = prim.seed_noise(final, groups)
    out.backtest = prim.backtest(pts, final, groups, cfg, out.isoflop.groups if out.isoflop is not None else ())
    return out


def summarize(out: FitOutcome) -> dict:
    """The fit.json dict (NaN written as null)."""
    cfg = out.cfg
    level = cfg.ci_level
    res: dict = {"schema": FIT_SCHEMA, "input": out.table.summary(), "n_excluded": out.table.n_excluded,
                 "config": cfg.to_dict()}
    res["bootstrap"] = {
        "n_resamples": cfg.n_bootstrap, "level": level, "seed": cfg.seed,
        "unit": "run_id" if out.table.present["run_id"] else "row",
        "stratified_by": "IsoFLOP group" if cfg.bootstrap_stratify else None,
        "method": "percentile; approach 3 refits warm-started from the full fit",
    }
    warnings = []
    ratio = res["input"]["median_flops_per_param_token"]
    if abs(ratio / cfg.flops_per_param_token - 1) > 0.1:
        warnings.append(f"the table's median C / (N D) is {ratio:.3g} but fit.flops_per_param_token = "
                        f"{cfg.flops_per_param_token:g}; approach 3's N_opt(C), D_opt(C) use the latter.")

    for name in APPROACHES:
        if name in out.skipped:
            res[name] = {"status": "skipped", "reason": out.skipped[name]}
            continue
        samples = out.samples.get(name)
        if name == "approach3":
            p = out.parametric
            entry = {"status": "ok", **p.as_dict()}
            if samples is not None:
                al, be = samples[:, 3], samples[:, 4]
                with np.errstate(all="ignore"):
                    full = np.column_stack([samples, be / (al + be), al / (al + be)])
                entry["ci"] = _intervals(full, PARAMETRIC_NAMES + ("a", "b"), level)
            warnings += parametric_warnings(p, float(out.final["loss"].min()))
        else:
            fit = out.envelope if name == "approach1" else out.isoflop
            laws = fit.laws
            entry = {"status": "ok", "a": laws.a, "b": laws.b, "k_n": laws.n_law.k, "k_d": laws.d_law.k,
                     "k_loss": laws.loss_law.k, "loss_exponent": laws.loss_law.exponent}
            if samples is not None:
                ci = _intervals(samples, LAW_NAMES, level)
                ci["k_n"] = [math.exp(v) for v in ci.pop("log_k_n")]
                ci["k_d"] = [math.exp(v) for v in ci.pop("log_k_d")]
                ci["k_loss"] = [math.exp(v) for v in ci.pop("log_k_loss")]
                entry["ci"] = ci
            if name == "approach1":
                entry["n_points"] = len(fit.flops)
                entry["method"] = (f"lowest loss per {cfg.envelope_bin_dex} dex bin of C over all "
                                   f"{len(out.table.points)} points, kept where it falls below every smaller C")
                entry["note"] = ("the envelope is a minimum and a resample can only drop runs, so approach 1's "
                                 "bootstrap intervals for the loss lean upwards (they may miss the point estimate)")
            else:
                entry["grouping"] = out.grouping
                entry["budgets"] = [g.as_dict() for g in fit.groups]
                entry["used_budgets"] = list(fit.used)
                edge = [g for g in fit.groups if g.fitted and not g.inside]
                entry["warnings"] = [f"budget {g.label}: {g.note}" for g in fit.groups if g.note]
                if edge:
                    warnings.append(f"approach 2: {len(edge)} budget(s) have their minimum outside the sampled "
                                    "sizes; widen the ladder (see approach2.budgets).")
        if samples is not None:
            entry["n_failed_resamples"] = int((~np.isfinite(samples).all(axis=1)).sum())
        res[name] = entry

    res["predictions"] = []
    for c in cfg.predict_flops:
        row = {"flops": float(c)}
        for name in APPROACHES:
            params = out.params_of(name)
            if params is not None:
                row[name] = predict_budgets(name, params, out.samples.get(name), [c], level=level,
                                            k=cfg.flops_per_param_token)[0].as_dict()
        res["predictions"].append(row)
    res["primary"] = [p.as_dict() for p in out.primary(cfg.predict_flops)]
    res["backtest"] = backtest_dict(out)
    res["loss_predictions"] = []
    if out.parametric is not None:
        res["loss_predictions"] = [p.as_dict() for p in predict_losses(
            out.params_of("approach3"), out.samples.get("approach3"), cfg.predict_points, level=level)]
    res["warnings"] = warnings + bump_warnings(out)
    return _clean(res)


def bump_warnings(out: FitOutcome) -> list[str]:
    """A size above both its neighbours, by more than two runs' seed noise can explain, at two or more
    budgets: the IsoFLOP profiles are not unimodal there, so say which size and what to do."""
    margin = prim.z_value(out.cfg.ci_level) * math.sqrt(2) * out.noise_sd if out.noise_sd else 0.0
    bumps = profile_bumps(out.final["params"], out.final["loss"], out.groups, margin=margin)
    return [f"N = {n:.3g} lies above both neighbouring sizes at {len(at)} budgets (by "
            f"{min(e for _, e in at):.3f}-{max(e for _, e in at):.3f} nats"
            + (f", more than the seed noise allows: {margin:.3f}" if margin else "") +
            "): the IsoFLOP profiles are not unimodal, so the parabola minima (approach 2) and every law fitted "
            "through that size are unreliable. A size's cells share one initialisation at every budget "
            "(trainer.seed), so one unlucky start shows at all of them: before betting on a forecast, re-run the "
            "sweep with another trainer.seed (every cell is then a new run) and see whether the bump moves."
            for n, at in sorted(bumps.items()) if len(at) >= 2]


def backtest_dict(out: FitOutcome) -> dict:
    """The rolling leave-a-budget-out backtest behind the primary rule, and the measured noise."""
    bt = out.backtest or prim.Backtest((), {})
    return {"folds": [{"target": f.target._asdict(), "c_below": f.c_below,
                       "errors": {a: e._asdict() for a, e in f.errors.items()}} for f in bt.folds],
            "skipped": dict(bt.skipped), "noise_sd": out.noise_sd, "noise_dof": out.noise_dof}


def parametric_warnings(p: ParametricFit, lowest_loss: float) -> list[str]:
    """What a reader of approach 3's law must know before trusting it."""
    out = []
    if not p.converged:
        out.append(f"approach 3 did not converge (max|grad| = {p.grad_norm:.3g}); do not trust it.")
    if not (p.alpha > 0 and p.beta > 0):
        out.append("approach 3: alpha or beta <= 0, so L does not fall with N or D: no frontier.")
    if p.E < 1e-3 * lowest_loss:
        out.append(f"approach 3: the floor E = {p.E:.3g} sits at its lower bound: these runs do not identify E "
                   "(add budgets or sizes); its loss forecasts lean on the A and B terms alone.")
    return out


def _intervals(samples: np.ndarray, names, level: float) -> dict:
    lo, hi = boot.percentile_interval(samples, level)
    return {n: [float(lo[i]), float(hi[i])] for i, n in enumerate(names)}


def _clean(obj):
    """Replace NaN/inf with None and numpy scalars with Python ones, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
