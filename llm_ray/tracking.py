"""Weights & Biases logging for one training run: world rank 0 only, never a secret.

`ray.air.integrations.wandb.setup_wandb(rank_zero_only=True)` was seen to create runs on every rank
under Ray Train V2, so the rank is checked here instead.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

SECRET_KEY_PATTERN = re.compile(r"(api[_-]?key|secret|token|password|credential|access[_-]?key)", re.I)


def scrub(obj: Any) -> Any:
    """Drop every mapping entry whose key looks like a secret (defence in depth: configs are
    built from dataclasses that hold no secrets, but user overrides can add keys)."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not SECRET_KEY_PATTERN.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def resolve_mode(mode: str) -> str:
    """`auto`: online with an API key in the environment, offline otherwise (no network try)."""
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def local_dir(directory: Optional[str]) -> str:
    """Where W&B writes its local files: `wandb.dir`, else this node's temp dir (the default when
    results live on remote storage, so no node-local path travels into them)."""
    import tempfile

    directory = directory or os.path.join(tempfile.gettempdir(), "llm-ray-wandb")
    os.makedirs(directory, exist_ok=True)
    return directory


class RunLogger:
    """A W&B run on world rank 0; a no-op elsewhere and when mode is disabled. `name` is what a
    person reads (`C3e13-N1.2M`); `key` (the run's content-keyed id) makes its W&B id, so a resumed
    run continues its W&B run and two configs never share one."""

    def __init__(self, *, enabled: bool, mode: str, project: str, entity: Optional[str],
                 group: Optional[str], name: str, key: str, job_type: str, directory: Optional[str],
                 config: dict,
                 step_metrics: tuple[str, ...] = ("tokens", "flops")):
        self.run = None
        mode = resolve_mode(mode)
        if not enabled or mode == "disabled":
            return
        import wandb

        directory = local_dir(directory)
        self.run = wandb.init(
            mode=mode, project=project, entity=entity, group=group, name=name, id=_run_id(group, key),
            job_type=job_type, dir=directory, config=scrub(config), resume="allow",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))
        # Loss against tokens and FLOPs as well as steps, so W&B can overlay runs of different
        # sizes on a compute axis directly.
        self.run.define_metric("step")
        for m in step_metrics:
            self.run.define_metric(m)
        for prefix in ("train/*", "val/*", "perf/*"):
            self.run.define_metric(prefix, step_metric="step")
        # The same losses against compute and data, so a sweep's runs overlay on one C or D axis.
        self.run.define_metric("vs_flops/*", step_metric="flops")
        self.run.define_metric("vs_tokens/*", step_metric="tokens")

    def log(self, row: dict) -> None:
        if self.run is not None:
            losses = {k.split("/")[0] + "_loss": v for k, v in row.items() if k in ("train/loss", "val/loss")}
            self.run.log({**row, **{f"vs_flops/{k}": v for k, v in losses.items()},
                          **{f"vs_tokens/{k}": v for k, v in losses.items()}})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _run_id(group: Optional[str], name: str) -> str:
    """A stable id from the run's coordinates, so a resumed run continues the same W&B run."""
    import hashlib

    return hashlib.sha1(f"{group}/{name}".encode()).hexdigest()[:16]


def log_fit_run(wandb_cfg, *, sweep_name: str, sweep_dir: str, table, fit: dict,
                directory: Optional[str]) -> None:
    """One `fit` run per sweep: the results table, the fitted law with intervals, the predictions,
    the plots as images, and native W&B charts (IsoFLOP curves, frontier) built from the tables."""
    mode = resolve_mode(wandb_cfg.mode)
    if mode == "disabled":
        return
    import tempfile

    import wandb

    from llm_ray import storage

    directory = local_dir(directory)
    run = wandb.init(mode=mode, project=wandb_cfg.project, entity=wandb_cfg.entity, group=sweep_name,
                     job_type="fit", name=f"{sweep_name}-fit", id=_run_id(sweep_name, "fit"), dir=directory,
                     config=scrub({"sweep": sweep_name, "fit": fit.get("config", {})}), resume="allow",
                     settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))
    try:
        results = wandb.Table(dataframe=table.astype({"reason": str, "status": str, "cell_id": str,
                                                      "run_id": str}))
        params = wandb.Table(columns=["approach", "parameter", "value", "ci_low", "ci_high"])
        for name in ("approach1", "approach2", "approach3"):
            entry = fit.get(name) or {}
            if entry.get("status") != "ok":
                continue
            keys = ("E", "A", "B", "alpha", "beta", "a", "b") if name == "approach3" else ("a", "b")
            for key in keys:
                ci = (entry.get("ci") or {}).get(key) or [None, None]
                params.add_data(name, key, entry.get(key), ci[0], ci[1])
        preds = wandb.Table(columns=["flops", "approach", "n_opt", "n_low", "n_high", "d_opt", "d_low",
                                     "d_high", "loss", "loss_low", "loss_high"])
        for row in fit.get("predictions", []):
            for name in ("approach1", "approach2", "approach3"):
                p = row.get(name)
                if p:
                    ci = p.get("ci") or {}
                    preds.add_data(row["flops"], name, p.get("n_opt"), *(ci.get("n_opt") or [None, None]),
                                   p.get("d_opt"), *(ci.get("d_opt") or [None, None]), p.get("loss"),
                                   *(ci.get("loss") or [None, None]))
        final = table[table["final"] & (table["status"] == "ok")].sort_values(["budget", "params"])
        curves = [(b, g) for b, g in final.groupby("budget")]
        charts = {}
        if curves:
            charts["charts/isoflop"] = wandb.plot.line_series(
                xs=[g["params"].tolist() for _, g in curves], ys=[g["loss"].tolist() for _, g in curves],
                keys=[f"C={b:.3g}" for b, _ in curves], title="IsoFLOP curves: final val loss vs N",
                xname="parameters N")
        minima = [g for g in ((fit.get("approach2") or {}).get("budgets") or []) if g.get("n_opt")]
        if minima:
            frontier = wandb.Table(columns=["flops", "n_opt", "d_opt"],
                                   data=[[g["flops"], g["n_opt"], g["d_opt"]] for g in minima])
            charts["charts/frontier_n_opt"] = wandb.plot.line(frontier, "flops", "n_opt",
                                                             title="IsoFLOP minima: N_opt vs C")
        images = {}
        with tempfile.TemporaryDirectory() as tmp:
            for png in (fit.get("plots") or []) + ["training_curves.png", "loss_contour.png"]:
                url = storage.join(sweep_dir, png)
                if storage.exists(url):
                    fs, path = storage.fs_and_path(url)
                    local = os.path.join(tmp, png)
                    fs.get(path, local)
                    images[f"plots/{png[:-4]}"] = wandb.Image(local)
            run.log({"results": results, "fit_parameters": params, "predictions": preds, **charts, **images})
        for name in ("approach1", "approach2", "approach3"):
            entry = fit.get(name) or {}
            for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
                if isinstance(entry.get(key), (int, float)):
                    run.summary[f"{name}/{key}"] = entry[key]
    finally:
        run.finish()
