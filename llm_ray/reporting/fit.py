"""Fit a results table and write the answer: fit.json, the fit's plots, and (for a sweep) report.md.

    run_fit(table_or_url, out_dir, cfg)        -> the fit.json dict (any table; `python -m llm_ray.fit`)
    fit_and_report(sweep_dir, table, cfg, ...) -> FitRecord (a sweep's table; fit + report + W&B)
    redraw([sweep_dir, ...], cfg)              -> re-fit and re-draw sweeps from results.parquet

The math is `llm_ray.fitting` (pure); this module adds the files.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import pandas as pd

from llm_ray.core.records import FitRecord, PlanRecord
from llm_ray.fitting import FitConfig, fit_all, summarize
from llm_ray.fitting.table import Source
from llm_ray.io import storage
from llm_ray.io.sweepdir import FIT, RESULTS, SweepDir


def run_fit(source: Source, out_dir: str, cfg: Optional[FitConfig] = None) -> dict:
    """Fit the table at `source` (path, fsspec URL or DataFrame); write fit.json and the PNGs into
    `out_dir`. Returns the fit.json dict. Raises ValueError when the table cannot be used at all."""
    cfg = cfg or FitConfig()
    t0 = time.perf_counter()
    outcome = fit_all(source, cfg)
    res = summarize(outcome)
    res["fit_seconds"] = time.perf_counter() - t0
    res["plots"] = []
    if cfg.plots:
        from llm_ray.reporting.fit_plots import make_plots
        from llm_ray.reporting.plots import png

        for name, fig in make_plots(outcome).items():
            storage.write_bytes_atomic(storage.join(out_dir, name), png(fig, tight=False))
            res["plots"].append(name)
    storage.write_json(storage.join(out_dir, "fit.json"), res)
    return res


def fit_and_report(sweep_dir: str, table: pd.DataFrame, fit_cfg: FitConfig, plan: PlanRecord, log=print,
                   wandb_cfg=None) -> FitRecord:
    """Fit a sweep's table and write fit.json, the plots and report.md into `sweep_dir`; with
    `wandb_cfg`, also the sweep's W&B `fit` run."""
    from llm_ray.reporting.markdown import render_report, stage_sections
    from llm_ray.reporting.plots import loss_contour_png, training_curves_png

    try:
        fit = FitRecord.from_json(run_fit(table, sweep_dir, fit_cfg))
    except ValueError as err:
        fit = FitRecord.failed(str(err))
        log(f"fit: not possible: {err}")
    storage.write_bytes_atomic(storage.join(sweep_dir, "training_curves.png"), training_curves_png(table))
    if fit.approach("approach3").ok:
        storage.write_bytes_atomic(storage.join(sweep_dir, "loss_contour.png"), loss_contour_png(table, fit))
    text = render_report(fit, table, plan, stage_sections(sweep_dir))
    storage.write_bytes_atomic(storage.join(sweep_dir, "report.md"), text.encode())
    log(text.split("\n## Cells")[0])  # the answer, on the console too
    if wandb_cfg is not None:
        from llm_ray.reporting.wandb_fit import log_fit_run

        log_fit_run(wandb_cfg, sweep_name=plan.name, sweep_dir=sweep_dir, table=table, fit=fit)
    return fit


def redraw(sweep_dirs: list[str], fit_cfg: FitConfig, out_dir: Optional[str] = None, log=print) -> dict:
    """Re-fit and re-draw each sweep from its results.parquet; overlay them when there are several."""
    done = []
    for sweep in (SweepDir(d) for d in sweep_dirs):
        sweep.require(RESULTS)
        fit = fit_and_report(sweep.url, sweep.fitted(), with_last_forecast_budgets(fit_cfg, sweep), sweep.plan,
                             log=log)
        done.append((sweep, fit))
        log(f"report: {sweep.path('report.md')}")
    if len(done) < 2:
        return {}
    out = storage.to_local_or_url(out_dir or done[0][0].path("compare"))
    write_comparison(out, [(s.plan.name, s.fitted(), fit, s.url) for s, fit in done])
    log(f"overlay: {storage.join(out, 'overlay.png')}")
    return {"compare": out}


def with_last_forecast_budgets(fit_cfg: FitConfig, sweep: SweepDir) -> FitConfig:
    """Without fit.predict_flops, a re-fit forecasts the budgets the sweep's last fit did."""
    if fit_cfg.predict_flops or not sweep.has(FIT):
        return fit_cfg
    return dataclasses.replace(fit_cfg, predict_flops=sweep.fit.predict_flops)


def write_comparison(out: str, sweeps: list[tuple]) -> None:
    """overlay.png and compare.md for (name, table, fit, directory) of two or more sweeps."""
    from llm_ray.reporting.plots import overlay_png

    storage.write_bytes_atomic(storage.join(out, "overlay.png"),
                               overlay_png([(name, table, fit) for name, table, fit, _ in sweeps]))
    lines = ["# Sweeps compared", ""]
    for name, _, fit, d in sweeps:
        a3 = fit.approach("approach3")
        words = f"E = {a3.E:.3f}, a = {a3.a:.3f}, b = {a3.b:.3f}" if a3.ok else "approach 3 not available"
        lines.append(f"- `{name}` ({d}): {words}")
    lines += ["", "![overlay](overlay.png)", ""]
    storage.write_bytes_atomic(storage.join(out, "compare.md"), "\n".join(lines).encode())
