"""The compression stage: every finished cell of a sweep, compressed each configured way, its loss
measured on the sweep's own held-out windows; then the degradation laws, the table and the report.

    compress_sweep(sweep_dir, CompressConfig(), wandb_cfg=..., resources=...)

Work unit: one (cell, setting) = one Ray task (1 CPU) that reloads the cell's saved weights, applies the
setting (`llm_ray.compression`: weights dequantized for the forward pass), measures the loss and writes
`<sweep_dir>/compress/<cell_id>/<setting_id>.json` atomically. A (cell, setting) whose file exists is
never evaluated again, so a re-run (or one with settings added) evaluates only what is missing, and a
crash loses nothing already written. Weights are read, never written.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from llm_ray.core.compression import (BASELINE, PRUNE_METHODS, QUANT_METHODS, CompressConfig, Setting, check_widths,
                                      model_bytes, settings)
from llm_ray.fitting.degradation import DegradationFit, fit_degradation
from llm_ray.io import storage
from llm_ray.reporting.compress import LAWS, ROWS_DIR, TABLE, write_outputs  # noqa: F401 - the files' names
from llm_ray.io.sweepdir import SweepCell, SweepDir, read_record



@dataclass(frozen=True)
class CompressRun:
    """What a compression stage produced."""

    sweep_dir: str
    table: pd.DataFrame
    laws: list
    evaluated: list
    """(cell_id, setting_id) evaluated by this call; the rest were already on disk."""
    skipped: dict
    """cell_id -> why it was not compressed (not finished ok)."""
    failed: dict


def row_url(sweep_dir: str, cell_id: str, setting: Setting) -> str:
    return storage.join(sweep_dir, ROWS_DIR, cell_id, f"{setting.setting_id}.json")


def compress_sweep(sweep_dir: str, cfg: CompressConfig, *, wandb_cfg=None, resources=None, log=print) -> CompressRun:
    """Check everything, evaluate the missing (cell, setting) pairs, then fit, tabulate and report."""
    cells, skipped = finished_cells(sweep_dir)
    todo = settings(cfg)
    check_inputs(sweep_dir, cells, todo)
    pending = [(c, s) for c in cells for s in todo if not storage.exists(row_url(sweep_dir, c.cell_id, s))]
    log(f"compress: {len(cells)} cells x {len(todo)} settings; {len(cells) * len(todo) - len(pending)} already "
        f"measured (kept), {len(pending)} to evaluate" + (f"; {len(skipped)} cells not finished ok" if skipped else ""))
    failed = evaluate_pending(sweep_dir, pending, cfg, resources, log) if pending else {}
    table = collect_table(sweep_dir, cells, todo)
    laws = fit_laws(table, cfg)
    run = CompressRun(sweep_dir=sweep_dir, table=table, laws=laws, skipped=skipped, failed=failed,
                      evaluated=[(c.cell_id, s.setting_id) for c, s in pending if (c.cell_id, s.setting_id) not in failed])
    write_outputs(run, cfg, wandb_cfg=stage_wandb(wandb_cfg, sweep_dir, cells), log=log)
    return run


def finished_cells(sweep_dir: str) -> tuple[list[SweepCell], dict]:
    """The plan's cells that finished ok (in plan order), and why each other one is left out."""
    sweep = SweepDir(sweep_dir)
    cells = sweep.cells(status="ok", need="compress")
    return cells, sweep.skipped(cells)


def check_inputs(sweep_dir: str, cells: list[SweepCell], todo: list[Setting]) -> None:
    """Every cell has its weights and every setting fits every cell's widths: else a ValueError before
    any evaluation starts."""
    SweepDir(sweep_dir).check_weights(cells)
    for c in cells:
        shape = c.record.model.shape()
        for s in todo:
            check_widths(shape, s, where=f"cell {c.cell_id} ({s.label})")


def evaluate_pending(sweep_dir: str, pending: list, cfg: CompressConfig, resources, log) -> dict:
    """One Ray task per (cell, setting), at most cfg.max_concurrent (default: the cluster's CPUs less
    one) at a time. Returns {(cell_id, setting_id): error} for the evaluations that failed (retried by
    the next run; the others are on disk)."""
    import ray

    from llm_ray.core.config import ResourcesConfig, TrainJobConfig
    from llm_ray.training.launch import init_ray

    init_ray(TrainJobConfig(resources=resources or ResourcesConfig()))
    limit = cfg.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    task = ray.remote(num_cpus=1, max_retries=0)(evaluate_setting)
    queue, refs, failed, t0 = list(pending), {}, {}, time.time()
    while queue or refs:
        while queue and len(refs) < limit:
            cell, setting = queue.pop(0)
            url = row_url(sweep_dir, cell.cell_id, setting)
            refs[task.remote(cell.run_dir, dataclasses.asdict(setting), url)] = (cell.cell_id, setting.setting_id)
        ready, _ = ray.wait(list(refs), num_returns=1)
        key = refs.pop(ready[0])
        try:
            ray.get(ready[0])
        except Exception as err:  # noqa: BLE001 - a failed evaluation is reported; the others go on
            failed[key] = f"{type(err).__name__}: {err}"[:500]
            log(f"compress: {key[0]} {key[1]} failed: {failed[key]}")
        done = len(pending) - len(queue) - len(refs)
        if done % 25 == 0 or done == len(pending):
            log(f"compress: {done}/{len(pending)} evaluated, {time.time() - t0:.0f} s")
    return failed


def evaluate_setting(run_dir: str, setting: dict, out_url: str) -> dict:
    """Ray task: reload the cell, compress a fresh copy of its weights, measure the held-out loss and
    write the row (atomically, last)."""
    import torch

    from llm_ray.compression import compress_
    from llm_ray.training.weights import held_out, load_trained, mean_loss

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    s = Setting(**setting)
    record = read_record(run_dir)
    model = load_trained(run_dir, record)
    x, y = held_out(record)
    t_loaded = time.perf_counter()
    done = compress_(model, s)
    loss = mean_loss(model, x, y, int(record.job.trainer.micro_batch_size))
    row = {"cell_id": os.path.basename(run_dir.rstrip("/")), **setting, "setting_id": s.setting_id,
           "val_loss": loss, "load_s": t_loaded - t0, "eval_s": time.perf_counter() - t_loaded, "pid": os.getpid(),
           **done}
    storage.write_json(out_url, row)
    return row


def collect_table(sweep_dir: str, cells: list[SweepCell], todo: list[Setting]) -> pd.DataFrame:
    """compress.parquet: one row per (cell, setting) measured, with the cell's coordinates, the bytes
    of the model under the setting, and delta_loss against the same cell's fp32 loss."""
    rows = []
    for c in cells:
        rec, shape = c.record, c.record.model.shape()
        for s in todo:
            url = row_url(sweep_dir, c.cell_id, s)
            if storage.exists(url):
                rows.append({**cell_columns(c), **storage.read_json(url), "precision": s.precision, "label": s.label,
                             "bytes": model_bytes(shape, s), "bytes_fp32": model_bytes(shape, Setting(BASELINE)),
                             "recorded_val_loss": rec.final_val_loss})
    table = pd.DataFrame(rows)
    base = table[table["method"] == BASELINE].set_index("cell_id")["val_loss"]
    table["base_val_loss"] = table["cell_id"].map(base)
    table["delta_loss"] = table["val_loss"] - table["base_val_loss"]
    table["rel_delta"] = table["delta_loss"] / table["base_val_loss"]
    table["compression"] = table["bytes_fp32"] / table["bytes"]
    return table


def cell_columns(c: SweepCell) -> dict:
    r = c.record
    return {"run_id": r.cell.name or r.run_id, "budget": float(r.cell.budget if r.cell.budget is not None else np.nan),
            "params": r.params, "params_non_embedding": r.params_non_embedding, "tokens": r.tokens,
            "flops": r.flops_exact, "tokens_per_param": r.tokens / r.params, "n_layer": r.model.n_layer,
            "d_model": r.model.d_model, "train_precision": r.deepspeed.precision if r.deepspeed else "fp32"}


def fit_laws(table: pd.DataFrame, cfg: CompressConfig) -> list[DegradationFit]:
    """A power law per setting (Kumar et al.'s delta_PTQ at fixed precision), and per method the joint
    form across its bit widths (ptq) or sparsities (sparsity) when it has two or more."""
    common = dict(min_delta=cfg.min_delta, n_bootstrap=cfg.n_bootstrap, ci_level=cfg.ci_level, seed=cfg.seed)
    laws = []
    for setting_id, g in table[table["method"] != BASELINE].groupby("setting_id", sort=False):
        laws.append(fit_degradation(g["params"], g["tokens"], g["delta_loss"], units=g["cell_id"],
                                    strata=g["budget"], name=setting_id, **common))
    for method, g in table.groupby("method", sort=False):
        if method in QUANT_METHODS and g["bits"].nunique() > 1:
            laws.append(fit_degradation(g["params"], g["tokens"], g["delta_loss"], form="ptq", bits=g["bits"],
                                        units=g["cell_id"], strata=g["budget"], name=method, **common))
        if method in PRUNE_METHODS and g["sparsity"].nunique() > 1:
            laws.append(fit_degradation(g["params"], g["tokens"], g["delta_loss"], form="sparsity",
                                        sparsity=g["sparsity"], units=g["cell_id"], strata=g["budget"], name=method,
                                        **common))
    return laws


def stage_wandb(wandb_cfg, sweep_dir: str, cells: list[SweepCell]) -> Optional[object]:
    """The W&B config for the stage's run: in the sweep's group, writing where its trials wrote."""
    if wandb_cfg is None:
        return None
    trial_dir = cells[0].record.job.wandb.dir if cells[0].record.job else None
    return dataclasses.replace(wandb_cfg, group=SweepDir(sweep_dir).group, dir=wandb_cfg.dir or trial_dir)
