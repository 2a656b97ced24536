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

from llm_ray.core.config import TrainJobConfig, job_from_record
from llm_ray.core.plan import Cell, SweepConfig, cell_key, plan_cell, size_to_shape
from llm_ray.core.records import APPROACHES, FitRecord, ForecastCheck
from llm_ray.core.recipes import base_lr
from llm_ray.fitting import FitConfig, fit_all
from llm_ray.fitting.predict import frontier_of, predict_budgets
from llm_ray.fitting.primary import PRIMARY, widen
from llm_ray.fitting.validation import Check, best_supported, forecast_loss, models_to_validate
from llm_ray.io import storage
from llm_ray.sweeps.results import collect_results, fitted_rows, read_results, write_results
from llm_ray.sweeps.runner import PlannedCell, cell_job, is_finished, plan_context, train_cells
from llm_ray.training.launch import read_record

STAGE = "validation"


def run_validation(sweep_dir: str, flops: list, log=print) -> list[ForecastCheck]:
    """Forecast, register, train and compare for each held-out budget in `flops`."""
    sweep, base, fit_cfg = sweep_settings(sweep_dir)
    check_budgets(flops, sweep)
    table = read_results(sweep_dir)
    fitted = fitted_rows(table)
    outcome = fit_all(fitted, fit_cfg)
    from llm_ray.training.launch import prepare

    data = prepare(base, log=log)
    budgets = [forecast_budget(outcome, sweep, base, data.n_train_tokens, float(c), sweep_dir) for c in flops]
    registration = register(sweep_dir, fit_key(fitted, outcome.cfg), outcome.cfg.ci_level, budgets, log)
    runs = {r["cell_id"]: r for b in registration["budgets"] for r in b["runs"]}
    planned = [PlannedCell(cell_id=r["cell_id"], cell=Cell(**r["cell"]),
                           job=cell_job(base, Cell(**r["cell"]), storage.join(sweep_dir, STAGE, "cells"),
                                        group=sweep.name).job) for r in runs.values()]
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
    checks = compare(registration, sweep_dir)
    write_outputs(sweep_dir, checks, registration, base, sweep.name)
    return checks


def sweep_settings(sweep_dir: str) -> tuple[SweepConfig, TrainJobConfig, FitConfig]:
    """The sweep's own settings, from its records: plan.json, a finished cell's RunRecord, fit.json."""
    plan = storage.read_json(storage.join(sweep_dir, "plan.json"))
    sweep = SweepConfig(**plan["sweep"])
    records = [read_record(storage.join(sweep_dir, "cells", c)) for c in plan["cells"]
               if storage.exists(storage.join(sweep_dir, "cells", c, "result.json"))]
    jobs = [r.job for r in records if r.job]
    if not jobs:
        raise ValueError(f"sweep_dir={sweep_dir!r}: no finished cell records its training config "
                         f"(result.json `job`): run the sweep (python -m llm_ray.sweep) first.")
    fit_cfg = FitConfig(**{k: v for k, v in storage.read_json(storage.join(sweep_dir, "fit.json"))["config"].items()
                           if k in FitConfig.__dataclass_fields__})
    base = job_from_record(jobs[0])
    # A cell's job carries its own lr, already set by sweep.hp_rule: undo the rule, or the held-out
    # runs would get it twice (under `width`, an lr off by width_ref / d_model of that cell).
    lr = base_lr(sweep.hp_rule, base.trainer.lr, d_model=base.model.d_model, width_ref=sweep.width_ref)
    return sweep, dataclasses.replace(base, trainer=dataclasses.replace(base.trainer, lr=lr)), fit_cfg


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
                    sweep_dir: str) -> dict:
    """Each approach's frontier at C, the models to train there, and every approach's predicted loss
    for each of them (registered as they are, before anything trains)."""
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
            dropped.append({"params": cell.params, "chosen_by": list(chosen_by), "reason": cell.reason})
            continue
        planned = cell_job(base, cell, storage.join(sweep_dir, STAGE, "cells"), group=sweep.name)
        forecasts = {name: forecast_loss(name, outcome.params_of(name), outcome.samples.get(name), n=cell.params,
                                         d=cell.tokens, c=c, level=level, k=k)._asdict() for name in frontier}
        runs.append({"cell_id": planned.cell_id, "chosen_by": list(chosen_by), "n_opt": n,
                     "cell": dataclasses.asdict(cell), "forecasts": forecasts})
    runs = merge_same_cells(runs)
    return {"flops": c, "frontier": frontier, "runs": runs, "dropped": dropped,
            "primary": primary_entry(primary, runs, level)}


def primary_entry(primary, runs: list[dict], level: float) -> Optional[dict]:
    """The primary forecast for the held-out run that trains its N (llm_ray.fitting.primary): the
    chosen approach's forecast at that run, its interval widened as at fit time."""
    run = next((r for r in runs if primary is not None and primary.n_from in r["chosen_by"]), None)
    if run is None:
        return None
    f = run["forecasts"][primary.loss_from]
    ci = widen(f["loss"], f["ci"], rel_error=primary.margin, noise_sd=primary.noise_sd, level=level)
    return {"rule": primary.rule, "n_from": primary.n_from, "loss_from": primary.loss_from, "why": primary.why,
            "cell_id": run["cell_id"], "loss": f["loss"], "ci": list(ci), "margin": primary.margin,
            "noise_sd": primary.noise_sd, "agrees_with": list(primary.agrees_with)}


def merge_same_cells(runs: list[dict]) -> list[dict]:
    """Two approaches whose N_opt round to the same shape train one run, chosen by both."""
    out: dict = {}
    for r in runs:
        if r["cell_id"] in out:
            out[r["cell_id"]]["chosen_by"] += r["chosen_by"]
        else:
            out[r["cell_id"]] = r
    return list(out.values())


def register(sweep_dir: str, key: str, level: float, budgets: list[dict], log) -> dict:
    """Append this fit's forecasts for budgets not registered yet to predictions.json; entries already
    there are never modified (a re-run reuses them). Returns this fit's registration."""
    path = storage.join(sweep_dir, "predictions.json")
    book = storage.read_json(path) if storage.exists(path) else {"schema": 1, "registrations": []}
    mine = {float(r["flops"]): r for r in book["registrations"] if r["fit_key"] == key}
    new = [b for b in budgets if float(b["flops"]) not in mine]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for b in new:
        entry = {"fit_key": key, "registered_at": now, "ci_level": level, **b}
        book["registrations"].append(entry)
        mine[float(b["flops"])] = entry
    if new:
        storage.write_json(path, book)
        budgets_text = ", ".join(f"{b['flops']:.3g}" for b in new)
        log(f"validation: forecasts for C = {budgets_text} registered in {path} before training")
    return {"fit_key": key, "budgets": [mine[float(b["flops"])] for b in budgets]}


def compare(registration: dict, sweep_dir: str) -> list[ForecastCheck]:
    """Every registered forecast against its held-out run's measured loss."""
    checks = []
    for b in registration["budgets"]:
        for run in b["runs"]:
            run_dir = storage.join(sweep_dir, STAGE, "cells", run["cell_id"])
            rec = read_record(run_dir) if storage.exists(storage.join(run_dir, "result.json")) else None
            measured = rec.final_val_loss if rec is not None and rec.status == "ok" else None
            forecasts = dict(run["forecasts"])
            if (b.get("primary") or {}).get("cell_id") == run["cell_id"]:
                forecasts = {PRIMARY: b["primary"], **forecasts}
            for name, f in forecasts.items():
                check = Check(name, f["loss"], tuple(f["ci"]) if f["ci"] else None,
                              measured if measured is not None else math.nan)
                checks.append(ForecastCheck(
                    flops=float(b["flops"]), cell_id=run["cell_id"], params=run["cell"]["params"],
                    tokens=run["cell"]["tokens"], chosen_by=tuple(run["chosen_by"]), approach=name,
                    predicted=f["loss"], ci=check.ci, measured=measured,
                    status=rec.status if rec is not None else "missing",
                    error=check.error if measured is not None else None,
                    inside=check.inside if measured is not None else None))
    return checks


def write_outputs(sweep_dir: str, checks: list[ForecastCheck], registration: dict, base: TrainJobConfig,
                  sweep_name: str) -> None:
    from llm_ray.reporting.markdown import refresh_report
    from llm_ray.reporting.validation import validation_markdown, validation_png, log_validation_table

    fit = FitRecord.from_json(storage.read_json(storage.join(sweep_dir, "fit.json")))
    supported = best_supported(Check(c.approach, c.predicted, c.ci, c.measured if c.measured is not None else np.nan)
                               for c in checks if c.approach != PRIMARY)
    storage.write_json(storage.join(sweep_dir, "validation.json"), {
        "schema": 1, "fit_key": registration["fit_key"], "supported": supported,
        "checks": [dataclasses.asdict(c) for c in checks],
        "dropped": [d | {"flops": b["flops"]} for b in registration["budgets"] for d in b["dropped"]]})
    table = read_results(sweep_dir)
    storage.write_bytes_atomic(storage.join(sweep_dir, "validation.png"), validation_png(table, fit, checks))
    storage.write_bytes_atomic(storage.join(sweep_dir, "validation.md"), validation_markdown(
        checks, registration, supported, top_budget=float(fitted_rows(table)["budget"].max())).encode())
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
