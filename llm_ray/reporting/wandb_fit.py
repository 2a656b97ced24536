"""A sweep's `fit` run on W&B: the results table, the fitted law with intervals, the forecasts, the
plots as images, and native W&B charts (IsoFLOP curves, frontier) built from the tables."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import pandas as pd

from llm_ray.core.records import APPROACHES, FitRecord
from llm_ray.io import storage
from llm_ray.io.tracking import start_run

LAW_KEYS = {"approach1": ("a", "b"), "approach2": ("a", "b"),
            "approach3": ("E", "A", "B", "alpha", "beta", "a", "b")}


def log_fit_run(wandb_cfg, *, sweep_name: str, sweep_dir: str, table: pd.DataFrame, fit: FitRecord) -> None:
    run = start_run(dataclasses.replace(wandb_cfg, group=sweep_name), name=f"{sweep_name}-fit", key="fit",
                    job_type="fit", config={"sweep": sweep_name, "fit": {"flops_per_param_token":
                                                                         fit.flops_per_param_token}})
    if run is None:
        return
    import wandb

    try:
        results = wandb.Table(dataframe=table.astype({"reason": str, "status": str, "cell_id": str, "run_id": str}))
        with tempfile.TemporaryDirectory() as tmp:
            run.log({"results": results, "fit_parameters": parameters_table(fit), "predictions": forecasts_table(fit),
                     **charts(table, fit), **images(sweep_dir, fit, tmp)})
        for name in APPROACHES:
            a = fit.approach(name)
            for key in LAW_KEYS[name]:
                if isinstance(getattr(a, key), (int, float)):
                    run.summary[f"{name}/{key}"] = getattr(a, key)
    finally:
        run.finish()


def parameters_table(fit: FitRecord):
    import wandb

    params = wandb.Table(columns=["approach", "parameter", "value", "ci_low", "ci_high"])
    for name in APPROACHES:
        a = fit.approach(name)
        if a.ok:
            for key in LAW_KEYS[name]:
                params.add_data(name, key, getattr(a, key), *(a.ci.get(key) or (None, None)))
    return params


def forecasts_table(fit: FitRecord):
    import wandb

    preds = wandb.Table(columns=["flops", "approach", "n_opt", "n_low", "n_high", "d_opt", "d_low", "d_high",
                                 "loss", "loss_low", "loss_high"])
    for p in fit.primary:  # the forecast to bet on (llm_ray.fitting.primary), then each approach
        preds.add_data(p.flops, "primary", p.n_opt, None, None, p.d_opt, None, None, p.loss, *(p.ci or (None, None)))
    for f in fit.forecasts:
        preds.add_data(f.flops, f.approach, f.n_opt, *(f.ci.get("n_opt") or (None, None)), f.d_opt,
                       *(f.ci.get("d_opt") or (None, None)), f.loss, *(f.ci.get("loss") or (None, None)))
    return preds


def charts(table: pd.DataFrame, fit: FitRecord) -> dict:
    import wandb

    final = table[table["final"] & (table["status"] == "ok")].sort_values(["budget", "params"])
    curves = list(final.groupby("budget"))
    out = {}
    if curves:
        out["charts/isoflop"] = wandb.plot.line_series(
            xs=[g["params"].tolist() for _, g in curves], ys=[g["loss"].tolist() for _, g in curves],
            keys=[f"C={b:.3g}" for b, _ in curves], title="IsoFLOP curves: final val loss vs N",
            xname="parameters N")
    minima = [g for g in fit.approach("approach2").budgets if g.n_opt]
    if minima:
        frontier = wandb.Table(columns=["flops", "n_opt", "d_opt"],
                               data=[[g.flops, g.n_opt, g.d_opt] for g in minima])
        out["charts/frontier_n_opt"] = wandb.plot.line(frontier, "flops", "n_opt", title="IsoFLOP minima: N_opt vs C")
    return out


def images(sweep_dir: str, fit: FitRecord, tmp: str) -> dict:
    """Every plot the sweep wrote, copied locally (the sweep may live on S3) for wandb.Image."""
    import wandb

    out = {}
    for png in list(fit.plots) + ["training_curves.png", "loss_contour.png"]:
        url = storage.join(sweep_dir, png)
        if storage.exists(url):
            local = os.path.join(tmp, png)
            storage.download_atomic(url, local)
            out[f"plots/{png[:-4]}"] = wandb.Image(local)
    return out
