"""Held-out validation: train the model the law recommends at budgets it never saw, and compare.

    forecast   the sweep's fit (the same table and config as fit.json) -> for each held-out budget C,
               the models to train (approach 3's N_opt; approach 2's where it differs by > 25%),
               shaped by the sweep's own rule, with every approach's predicted loss and interval
    register   predictions.json, written BEFORE any held-out run starts and never modified after
               (Marin's Delphi and the GPT-4 report pre-registered theirs: the check cannot be tuned
               after the fact); registrations are keyed by the fit they came from and only appended
    train      the held-out runs with the sweep's recipe, keyed and resumed like sweep cells, under
               <sweep_dir>/validation/cells (never in the fit)
    compare    validation.json, results.parquet rows with role=validation, the report's section
               "Does the law hold?" (validation.md) with validation.png, and a table in the W&B fit run
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Optional

import numpy as np
import pandas as pd

from llm_ray.core.config import TrainJobConfig
from llm_ray.core.plan import Cell, SweepConfig, cell_key, plan_cell, size_to_shape
from llm_ray.core.records import (APPROACHES, DroppedRun, ForecastCheck, HeldOutRun, Prediction, Registration,
                                  RegisteredPrimary)
from llm_ray.core.recipes import base_lr
from llm_ray.core.secrets import MASK
from llm_ray.fitting import FitConfig, fit_all
from llm_ray.fitting.predict import frontier_of, predict_budgets
from llm_ray.fitting.primary import PRIMARY, widen
from llm_ray.fitting.validation import Check, best_supported, forecast_loss, models_to_validate
from llm_ray.io import storage
from llm_ray.sweeps.results import collect_results, fitted_rows, read_results, write_results
from llm_ray.io.sweepdir import PREDICTIONS, SweepDir, is_finished
from llm_ray.sweeps.cells import PlannedCell, cell_job
from llm_ray.sweeps.runner import plan_context, train_cells

STAGE = "validation"


def run_validation(sweep_dir: str, flops: list, log=print, sources: Optional[list] = None) -> list[ForecastCheck]:
    """Forecast, register, train and compare for each held-out budget in `flops`. `sources`: the
    sweep command's own data.sources (its records hold them with credentials masked)."""
    sweep, base, fit_cfg = sweep_settings(sweep_dir)
    check_budgets(flops, sweep)
    table = read_results(sweep_dir)
    fitted = fitted_rows(table)
    outcome = fit_all(fitted, fit_cfg)
    from llm_ray.training.launch import prepare, with_data_vocab

    data = prepare(with_sources(base, sources), log=log)
    base = with_data_vocab(base, data)
    budgets = [forecast_budget(outcome, sweep, base, data.n_train_tokens, float(c), sweep_dir) for c in flops]
    key = fit_key(fitted, outcome.cfg)
    registrations = register(sweep_dir, key, outcome.cfg.ci_level, budgets, log)
    runs = {r.cell_id: r for b in registrations for r in b.runs}
    planned = [PlannedCell(cell_id=r.cell_id, cell=r.cell,
                           job=cell_job(base, r.cell, storage.join(sweep_dir, STAGE, "cells"), group=sweep.name).job)
               for r in runs.values()]
    pending = [p for p in planned if not is_finished(storage.join(sweep_dir, STAGE, "cells", p.cell_id))]
    log(f"validation: {len(planned) - len(pending)} held-out runs already finished (kept), {len(pending)} to train")
    if pending:
        # Under sweep.schedule=wsd_branches a held-out run whose shape and recipe match a sweep
        # trunk's branches from it, continuing the trunk from its last point (its id omits its length).
        train_cells(pending, base, data, sweep, storage.join(sweep_dir, STAGE), n_total=len(planned), log=log,
                    trunks_dir=storage.join(sweep_dir, "trunks"))
    held_out = collect_results(storage.join(sweep_dir, STAGE, "cells"), {p.cell_id: p.cell for p in planned},
                               role=STAGE)
    write_results(pd.concat([fitted, held_out], ignore_index=True), sweep_dir)
    checks = compare(registrations, sweep_dir)
    write_outputs(sweep_dir, checks, key, registrations, base, sweep.name)
    return checks


def with_sources(base: TrainJobConfig, sources: Optional[list]) -> TrainJobConfig:
    """The recorded job, with the corpus URLs to read it again: `sources` when given, else the
    recorded ones, which must not be masked (a credential in a URL is never written out)."""
    if sources is not None:
        return dataclasses.replace(base, data=dataclasses.replace(base.data, sources=list(sources)))
    masked = [s for s in base.data.sources if MASK in str(s)]
    if masked:
        raise ValueError(f"data.sources {masked}: the sweep's corpus URLs held credentials, which its records "
                         f"keep masked; validate from the sweep command itself (sweep.validate_flops), or give "
                         f"the credential to the storage's own chain (~/.netrc, AWS variables) and a URL without it.")
    return base


def sweep_settings(sweep_dir: str) -> tuple[SweepConfig, TrainJobConfig, FitConfig]:
    """The sweep's own settings, from its records: plan.json, a finished cell's RunRecord, fit.json."""
    sweep = SweepDir(sweep_dir)
    jobs = [c.record.job for c in sweep.cells() if c.record is not None and c.record.job is not None]
    if not jobs:
        raise ValueError(f"sweep_dir={sweep_dir!r}: no finished cell records its training config "
                         f"(result.json `job`): run the sweep (python -m llm_ray.sweep) first.")
    plan, base = sweep.plan.sweep, jobs[0]
    # A cell's job carries its own lr, already set by sweep.hp_rule: undo the rule, or the held-out
    # runs would get it twice (under `width`, an lr off by width_ref / d_model of that cell).
    lr = base_lr(plan.hp_rule, base.trainer.lr, d_model=base.model.d_model, width_ref=plan.width_ref)
    return plan, dataclasses.replace(base, trainer=dataclasses.replace(base.trainer, lr=lr)), sweep.fit_config()


def check_budgets(flops: list, sweep: SweepConfig) -> None:
    top = max(float(b) for b in sweep.budgets)
    if not flops:
        raise ValueError("no held-out budget: give flops=[...] (or sweep.validate_flops), e.g. "
                         f"[{4 * top:.3g}] (4x the sweep's top budget).")
    inside = [c for c in flops if float(c) <= top]
    if inside:
        raise ValueError(f"held-out budgets {inside} are not beyond the sweep's top budget {top:.3g}: a "
                         f"forecast is checked on a budget the fit never saw; use budgets > {top:.3g}.")


def fit_key(fitted: pd.DataFrame, cfg: FitConfig) -> str:
    """What a forecast was made from: the fitted runs' final losses and the fit's settings."""
    final = fitted[fitted["final"]].sort_values("cell_id")
    return cell_key({"runs": [[c, round(float(l), 9)] for c, l in zip(final["cell_id"], final["loss"])],
                     "fit": cfg.to_dict()})


def forecast_budget(outcome, sweep: SweepConfig, base: TrainJobConfig, train_tokens: int, c: float,
                    sweep_dir: str) -> Registration:
    """Each approach's frontier at C, the models to train there, and every approach's predicted loss
    for each of them (registered as they are, before anything trains; `register` stamps it)."""
    k, level = outcome.cfg.flops_per_param_token, outcome.cfg.ci_level
    frontier = {}
    for name in APPROACHES:
        params = outcome.params_of(name)
        if params is not None:
            frontier[name] = predict_budgets(name, params, outcome.samples.get(name), [c], level=level, k=k)[0].as_dict()
    n_opt = {name: float(frontier_of(name, outcome.params_of(name), [c], k)[0][0]) for name in frontier}
    primary = next(iter(outcome.primary([c])), None)
    ctx = plan_context(base, train_tokens)
    runs, dropped = [], []
    for n, chosen_by in models_to_validate(n_opt, first=primary.n_from if primary else None):
        cell = plan_cell(sweep, ctx, c, size_to_shape(sweep, ctx, n), check_ratio=False)
        if not isinstance(cell, Cell):
            dropped.append(DroppedRun(params=cell.params, chosen_by=tuple(chosen_by), reason=cell.reason))
            continue
        planned = cell_job(base, cell, storage.join(sweep_dir, STAGE, "cells"), group=sweep.name)
        forecasts = {name: Prediction(*forecast_loss(name, outcome.params_of(name), outcome.samples.get(name),
                                                     n=cell.params, d=cell.tokens, c=c, level=level, k=k))
                     for name in frontier}
        runs.append(HeldOutRun(cell_id=planned.cell_id, chosen_by=tuple(chosen_by), n_opt=n, cell=cell,
                               forecasts=forecasts))
    runs = merge_same_cells(runs)
    return Registration(fit_key="", registered_at="", ci_level=level, flops=c, frontier=frontier,
                        runs=tuple(runs), dropped=tuple(dropped), primary=primary_entry(primary, runs, level))


def primary_entry(primary, runs: list[HeldOutRun], level: float) -> Optional[RegisteredPrimary]:
    """The primary forecast for the held-out run that trains its N (llm_ray.fitting.primary): the
    chosen approach's forecast at that run, its interval widened as at fit time."""
    run = next((r for r in runs if primary is not None and primary.n_from in r.chosen_by), None)
    if run is None:
        return None
    f = run.forecasts[primary.loss_from]
    ci = widen(f.loss, f.ci, rel_error=primary.margin, noise_sd=primary.noise_sd, level=level)
    return RegisteredPrimary(rule=primary.rule, n_from=primary.n_from, loss_from=primary.loss_from,
                             cell_id=run.cell_id, loss=f.loss, ci=ci if all(map(math.isfinite, ci)) else None,
                             why=primary.why, margin=primary.margin, noise_sd=primary.noise_sd,
                             agrees_with=tuple(primary.agrees_with))


def merge_same_cells(runs: list[HeldOutRun]) -> list[HeldOutRun]:
    """Two approaches whose N_opt round to the same shape train one run, chosen by both."""
    out: dict = {}
    for r in runs:
        first = out.get(r.cell_id)
        out[r.cell_id] = dataclasses.replace(first, chosen_by=first.chosen_by + r.chosen_by) if first else r
    return list(out.values())


def register(sweep_dir: str, key: str, level: float, budgets: list[Registration], log) -> list[Registration]:
    """Append this fit's forecasts for budgets not registered yet to predictions.json; entries already
    there are never modified (a re-run reuses them). Returns this fit's registration of each budget."""
    sweep = SweepDir(sweep_dir)
    mine = {float(r.flops): r for r in sweep.registrations() if r.fit_key == key}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    new = [dataclasses.replace(b, fit_key=key, registered_at=now, ci_level=level)
           for b in budgets if float(b.flops) not in mine]
    if new:
        sweep.register(new)
        mine.update({float(b.flops): b for b in new})
        log(f"validation: forecasts for C = {', '.join(f'{b.flops:.3g}' for b in new)} registered in "
            f"{sweep.path(PREDICTIONS)} before training")
    return [mine[float(b.flops)] for b in budgets]


def compare(registrations: list[Registration], sweep_dir: str) -> list[ForecastCheck]:
    """Every registered forecast against its held-out run's measured loss."""
    checks = []
    for b in registrations:
        for run in b.runs:
            rec = SweepDir(sweep_dir).record(run.cell_id, stage=STAGE)
            measured = rec.final_val_loss if rec is not None and rec.status == "ok" else None
            forecasts = dict(run.forecasts)
            if b.primary is not None and b.primary.cell_id == run.cell_id:
                forecasts = {PRIMARY: b.primary, **forecasts}
            for name, f in forecasts.items():
                check = Check(name, f.loss, f.ci, measured if measured is not None else math.nan)
                checks.append(ForecastCheck(
                    flops=float(b.flops), cell_id=run.cell_id, params=run.cell.params,
                    tokens=run.cell.tokens, chosen_by=run.chosen_by, approach=name,
                    predicted=f.loss, ci=check.ci, measured=measured,
                    status=rec.status if rec is not None else "missing",
                    error=check.error if measured is not None else None,
                    inside=check.inside if measured is not None else None))
    return checks


def write_outputs(sweep_dir: str, checks: list[ForecastCheck], key: str, registrations: list[Registration],
                  base: TrainJobConfig, sweep_name: str) -> None:
    from llm_ray.reporting.markdown import refresh_report
    from llm_ray.reporting.validation import validation_markdown, validation_png, log_validation_table

    fit = SweepDir(sweep_dir).fit
    supported = best_supported(Check(c.approach, c.predicted, c.ci, c.measured if c.measured is not None else np.nan)
                               for c in checks if c.approach != PRIMARY)
    storage.write_json(storage.join(sweep_dir, "validation.json"), {
        "schema": 1, "fit_key": key, "supported": supported,
        "checks": [dataclasses.asdict(c) for c in checks],
        "dropped": [d.to_json() | {"flops": b.flops} for b in registrations for d in b.dropped]})
    table = read_results(sweep_dir)
    storage.write_bytes_atomic(storage.join(sweep_dir, "validation.png"), validation_png(table, fit, checks))
    storage.write_bytes_atomic(storage.join(sweep_dir, "validation.md"), validation_markdown(
        checks, registrations, supported, top_budget=float(fitted_rows(table)["budget"].max())).encode())
    refresh_report(sweep_dir)
    log_validation_table(dataclasses.replace(base.wandb, group=sweep_name), sweep_name, checks)


def summary_line(checks: list[ForecastCheck]) -> Optional[str]:
    """One line per measured forecast, for the console."""
    done = [c for c in checks if c.measured is not None]
    if not done:
        return None
    return "\n".join(f"validation: {c.approach} at C={c.flops:.3g} (N={c.params:,}): predicted {c.predicted:.4f}, "
                     f"measured {c.measured:.4f} ({100 * c.error:+.2f}%, "
                     f"{'inside' if c.inside else 'outside'} its interval)" for c in done)
