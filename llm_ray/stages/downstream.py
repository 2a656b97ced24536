"""The downstream stage: fine-tune every finished cell of a sweep on a labelled task, beside three
baselines, and map test accuracy against pre-training compute and loss.

    run_downstream(sweep_dir, DownstreamConfig(), resources, wandb_cfg) -> the task's rows

Everything that can be wrong with the input is checked before any trial starts: the task and its
split (llm_ray.finetune.tasks), the test size against the interval asked, saved weights for every
cell, one tokenizer that matches every checkpoint. The split is encoded once with the sweep's
tokenizer (`split.npz`); then one Ray Tune trial per fine-tune (every finished cell, and each model
size from scratch); the majority class and TF-IDF + logistic regression run here (seconds).

Files, beside the sweep's:
- `downstream/<task>-<key>/`: `split.npz`, `runs/<row id>/result.json` (one per fine-tune, written
  whole at its end), Tune's state. `key` hashes the task, its split and the recipe: a re-run with the
  same settings fine-tunes nothing twice (only rows without an `ok` result run), a changed recipe
  gets a directory of its own.
- `downstream.parquet`: one row per (cell or baseline, task); `downstream.md`, `downstream_<task>_*.png`
  (llm_ray.reporting.downstream), then report.md is re-rendered with the section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from llm_ray.core.config import ResourcesConfig, TrainJobConfig, WandbConfig
from llm_ray.core.plan import _count as count_label
from llm_ray.core.records import FinetuneResult, RunRecord
from llm_ray.finetune.config import DownstreamConfig
from llm_ray.finetune.tasks import LabelledSplits, load_records, split_records
from llm_ray.io import storage
from llm_ray.sweeps.runner import ctrl_c_stops_the_command
from llm_ray.io.sweepdir import SweepDir, read_finetune_result

KINDS = ("pretrained", "scratch", "baseline")
COLUMNS = ["task", "cell_id", "kind", "params", "flops", "budget", "n_layer", "d_model", "pretrain_loss",
           "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1", "n_correct", "n_test", "n_train",
           "finetune_s", "eval_s", "recipe_key"]


@dataclass(frozen=True)
class SweepCell:
    """A finished cell as the stage reads it: its id, shape, compute, loss and checkpoint."""

    cell_id: str
    record: RunRecord
    budget: float
    flops: float
    loss: float
    weights: Optional[str]


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tune (a Tune trial): what it trains, from which weights, and where it writes."""

    row_id: str
    kind: str
    model: dict
    weights: Optional[str]
    params: int
    flops: float
    budget: float
    pretrain_loss: float
    split_path: str
    n_classes: int
    recipe: dict
    ci_level: float
    out_dir: str
    threads: int


def run_downstream(sweep_dir: str, cfg: DownstreamConfig, resources: Optional[ResourcesConfig] = None,
                   wandb_cfg=None, log=print) -> pd.DataFrame:
    """The whole stage for one task: checks, trials, baselines, table, fits, report."""
    from llm_ray.reporting.downstream import write_downstream_report

    sweep_dir = storage.to_local_or_url(sweep_dir)
    cells = read_cells(sweep_dir)
    tokenizer_path = check_checkpoints(cells)
    splits = load_splits(cfg)
    check_max_tokens(cfg, cells)
    stage_dir = storage.join(sweep_dir, "downstream", f"{cfg.task}-{content_key(cfg, cells[0].record.data_key)}")
    split_path = write_split(splits, tokenizer_path, cfg.max_tokens, stage_dir)
    jobs = plan_jobs(cells, cfg, split_path, stage_dir, len(splits.classes))
    pending = [j for j in jobs if not finished(j)]
    log(f"downstream {cfg.task}: {len(jobs) - len(pending)} fine-tunes already done (kept), {len(pending)} to run "
        f"({len(splits.train_texts)} train / {len(splits.test_texts)} test examples, {len(splits.classes)} classes)")
    if pending:
        t0 = time.perf_counter()
        run_trials(pending, stage_dir, cfg, resources or cells[0].record.job.resources)
        log(f"downstream {cfg.task}: {len(pending)} fine-tune trials in {time.perf_counter() - t0:.0f} s")
    rows = [finetune_row(j, cfg) for j in jobs if finished(j)]
    failed = [j.row_id for j in jobs if not finished(j)]
    table = pd.DataFrame(baseline_rows(splits, cfg) + rows, columns=COLUMNS)
    write_table(sweep_dir, cfg.task, table)
    write_downstream_report(sweep_dir, cfg, table, splits, failed=failed, wandb_cfg=sweep_wandb(wandb_cfg, cells),
                            log=log)
    return table


# --------------------------------------------------------------------------------------------
# Checks, before any trial
# --------------------------------------------------------------------------------------------

def sweep_wandb(wandb_cfg: Optional[WandbConfig], cells: list[SweepCell]) -> WandbConfig:
    """The W&B settings given (else the sweep's), with the sweep's resolved local directory when none
    is set, so the stage's run lands beside the sweep's trial and fit runs."""
    recorded = cells[0].record.job.wandb
    cfg = wandb_cfg or recorded
    return dataclasses.replace(cfg, dir=cfg.dir or recorded.dir)


def read_cells(sweep_dir: str) -> list[SweepCell]:
    """The sweep's finished `ok` cells (SweepDir: the plan's cells, their records, their saved weights),
    by budget and size, each with its final evaluation (the point the law was fitted on)."""
    cells = []
    for c in SweepDir(sweep_dir).cells(status="ok", weights=True, need="fine-tune"):
        evals = c.record.eval_points()
        flops, loss = (evals[-1].flops_exact, evals[-1].val_loss) if evals else (np.nan, np.nan)
        cells.append(SweepCell(c.cell_id, c.record, float(c.cell.budget), float(flops), float(loss), c.weights))
    return sorted(cells, key=lambda c: (c.budget, c.record.params))


def check_checkpoints(cells: list[SweepCell]) -> str:
    """The sweep's one tokenizer, after checking it against every checkpoint: same tokenizer file for
    every cell, its vocabulary = model.vocab_size = the rows of the saved embedding."""
    import fsspec
    import torch

    from llm_ray.data import load_tokenizer

    from llm_ray.data import PreparedData

    paths = {PreparedData.from_dict(c.record.data).tokenizer_path for c in cells}
    if len(paths) != 1 or None in paths:
        raise ValueError(f"the sweep's cells were trained with {len(paths)} different tokenizers ({sorted(map(str, paths))}): "
                         f"fine-tune a sweep whose cells share one data config (data.* and its cache entry).")
    path = paths.pop()
    if not storage.exists(path):
        raise ValueError(f"the sweep's tokenizer {path} is gone (data cache cleared?): re-run the sweep command, "
                         f"which rebuilds the same cache entry, or restore data.cache_dir.")
    vocab = load_tokenizer(path).get_vocab_size()
    for c in cells:
        with fsspec.open(c.weights, "rb") as f:
            rows = torch.load(f, map_location="cpu", weights_only=True)["wte.weight"].shape[0]
        if not vocab == c.record.model.vocab_size == rows:
            raise ValueError(f"cell {c.cell_id}: tokenizer/vocabulary mismatch: the sweep's tokenizer {path} has "
                             f"{vocab} tokens, the cell's model.vocab_size is {c.record.model.vocab_size} and its "
                             f"checkpoint's embedding has {rows} rows: the checkpoint was not trained with this "
                             f"tokenizer; re-train the cell (delete cells/{c.cell_id}, re-run the sweep).")
    return path


def load_splits(cfg: DownstreamConfig) -> LabelledSplits:
    return split_records(load_records(cfg.task, cfg.path), n_train=cfg.n_train, n_test=cfg.n_test,
                         seed=cfg.split_seed, task=cfg.task)


def check_max_tokens(cfg: DownstreamConfig, cells: list[SweepCell]) -> None:
    seq = min(int(c.record.model.seq_len) for c in cells)
    if cfg.max_tokens > seq:
        raise ValueError(f"downstream.max_tokens={cfg.max_tokens} exceeds the sweep's model.seq_len={seq} "
                         f"(its position table): use downstream.max_tokens<={seq}.")


# --------------------------------------------------------------------------------------------
# Jobs and trials
# --------------------------------------------------------------------------------------------

def content_key(cfg: DownstreamConfig, data_key: str) -> str:
    """Hash of the task, its split, the recipe and the sweep's data entry (its tokenizer), not of any
    path: a sweep directory moved elsewhere keeps its fine-tunes."""
    blob = json.dumps({"task": cfg.task_key(), "recipe": cfg.recipe(), "data": data_key}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def write_split(splits: LabelledSplits, tokenizer_path: str, max_tokens: int, stage_dir: str) -> str:
    """split.npz: the train and test splits as padded token ids, lengths and labels (encoded once)."""
    from llm_ray.finetune.loop import encode

    path = storage.join(stage_dir, "split.npz")
    if storage.exists(path):
        return path
    arrays = {}
    for name in ("train", "test"):
        enc = encode(tokenizer_path, getattr(splits, f"{name}_texts"), max_tokens)
        arrays.update({f"{name}_ids": enc.ids, f"{name}_lengths": enc.lengths,
                       f"{name}_labels": np.asarray(getattr(splits, f"{name}_labels"), dtype=np.int64)})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    storage.write_bytes_atomic(path, buf.getvalue())
    return path


def plan_jobs(cells: list[SweepCell], cfg: DownstreamConfig, split_path: str, stage_dir: str,
              n_classes: int) -> list[FinetuneJob]:
    """A fine-tune per cell, and (downstream.scratch) one per distinct model shape from scratch."""
    common = dict(split_path=split_path, n_classes=n_classes, recipe=cfg.recipe(), ci_level=cfg.ci_level,
                  threads=cfg.threads_per_trial)
    jobs = [FinetuneJob(row_id=c.cell_id, kind="pretrained", model=dataclasses.asdict(c.record.model), weights=c.weights,
                        params=int(c.record.params), flops=c.flops, budget=c.budget, pretrain_loss=c.loss,
                        out_dir=storage.join(stage_dir, "runs", c.cell_id), **common) for c in cells]
    if cfg.scratch:
        shapes = {}
        for c in cells:
            shapes.setdefault(json.dumps(dataclasses.asdict(c.record.model), sort_keys=True), c)
        for c in shapes.values():
            row_id = f"scratch-N{count_label(c.record.params)}"  # as cell names: N49.6k
            jobs.append(FinetuneJob(row_id=row_id, kind="scratch", model=dataclasses.asdict(c.record.model), weights=None,
                                    params=int(c.record.params), flops=0.0, budget=0.0, pretrain_loss=float("nan"),
                                    out_dir=storage.join(stage_dir, "runs", row_id), **common))
    return jobs


def finished(job: FinetuneJob) -> bool:
    result = read_finetune_result(job.out_dir)
    return result is not None and result.ok


def run_trials(pending: list[FinetuneJob], stage_dir: str, cfg: DownstreamConfig, resources: ResourcesConfig) -> None:
    """One Ray Tune trial per pending fine-tune, the largest models first."""
    import ray
    from ray import tune

    from llm_ray.sweeps.runner import keep_cloud_secrets_out_of_trial_runtime_env
    from llm_ray.training.launch import init_ray

    init_ray(TrainJobConfig(resources=resources))
    cpus = ray.cluster_resources().get("CPU", 1)
    concurrency = cfg.max_concurrent_trials or max(1, int((cpus - 1) // cfg.threads_per_trial))
    pending = sorted(pending, key=lambda j: -j.params)
    tune_path, tune_fs = storage.ray_storage(stage_dir)
    tuner = tune.Tuner(
        tune.with_resources(finetune_trial, {"CPU": cfg.threads_per_trial}),
        param_space={"trial": tune.grid_search([{"row_id": j.row_id, "job": j} for j in pending])},
        # A fine-tune leaves no framework state behind (plain torch), so trial processes are reused.
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name="tune", storage_path=tune_path, storage_filesystem=tune_fs, verbose=0),
    )
    keep_cloud_secrets_out_of_trial_runtime_env()
    ctrl_c_stops_the_command()
    tuner.fit()


def _trial_name(trial) -> str:
    return trial.config["trial"]["row_id"]


def finetune_trial(config: dict) -> None:
    """Tune trial: one fine-tune and its test evaluation; the result is written whole at the end (a
    failure is recorded, not raised, and retried by the next run)."""
    job: FinetuneJob = config["trial"]["job"]
    try:
        result = run_finetune(job)
    except Exception as err:  # noqa: BLE001 - a failed fine-tune is a result of the stage
        result = {"status": "failed", "reason": f"{type(err).__name__}: {err}"[:2000]}
    record = FinetuneResult.from_json({"row_id": job.row_id, "kind": job.kind, **result})
    storage.write_json(storage.join(job.out_dir, "result.json"), record.to_json())


def run_finetune(job: FinetuneJob) -> dict:
    """Build the classifier (pre-trained or fresh body), fine-tune it, score it on the test split."""
    import torch

    from llm_ray.finetune.loop import Encoded, finetune, predict
    from llm_ray.finetune.model import build_classifier
    from llm_ray.fitting.downstream import classification_scores

    torch.set_num_threads(job.threads)
    fs, path = storage.fs_and_path(job.split_path)
    with fs.open(path, "rb") as f:
        z = dict(np.load(io.BytesIO(f.read())))
    train, test = (Encoded(z[f"{s}_ids"], z[f"{s}_lengths"]) for s in ("train", "test"))
    model = build_classifier(job.model, job.n_classes, job.recipe["pooling"], job.recipe["seed"], job.weights)
    fit = finetune(model, train, z["train_labels"], job.recipe)
    t0 = time.perf_counter()
    preds = predict(model, test)
    eval_s = time.perf_counter() - t0
    scores = classification_scores(z["test_labels"], preds, job.n_classes, job.ci_level)
    return {"status": "ok", **scores._asdict(), **fit, "eval_s": eval_s, "pid": os.getpid(),
            "n_train": int(len(z["train_labels"])), "predictions": preds.tolist()}


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

def finetune_row(job: FinetuneJob, cfg: DownstreamConfig) -> dict:
    r = read_finetune_result(job.out_dir)
    return {"task": cfg.task, "cell_id": job.row_id, "kind": job.kind, "params": job.params, "flops": job.flops,
            "budget": job.budget, "n_layer": job.model["n_layer"], "d_model": job.model["d_model"],
            "pretrain_loss": job.pretrain_loss, "accuracy": r.accuracy, "accuracy_lo": r.accuracy_lo,
            "accuracy_hi": r.accuracy_hi, "macro_f1": r.macro_f1, "n_correct": r.n_correct,
            "n_test": r.n, "n_train": r.n_train, "finetune_s": r.train_s, "eval_s": r.eval_s,
            "recipe_key": job.out_dir.rstrip("/").split("/")[-3]}


def baseline_rows(splits: LabelledSplits, cfg: DownstreamConfig) -> list[dict]:
    """Majority class and TF-IDF + logistic regression on the same splits (seconds, so recomputed)."""
    from llm_ray.finetune.baselines import majority_predictions, tfidf_logreg_predictions
    from llm_ray.fitting.downstream import classification_scores

    rows = []
    for name, make in (("majority", lambda: majority_predictions(splits.train_labels, len(splits.test_labels))),
                       ("tfidf_logreg", lambda: tfidf_logreg_predictions(splits.train_texts, splits.train_labels,
                                                                         splits.test_texts, cfg.seed))):
        t0 = time.perf_counter()
        preds, params = make()
        s = classification_scores(splits.test_labels, preds, len(splits.classes), cfg.ci_level)
        rows.append({"task": cfg.task, "cell_id": name, "kind": "baseline", "params": params, "flops": 0.0,
                     "budget": 0.0, "pretrain_loss": float("nan"), "accuracy": s.accuracy, "accuracy_lo": s.accuracy_lo,
                     "accuracy_hi": s.accuracy_hi, "macro_f1": s.macro_f1, "n_correct": s.n_correct, "n_test": s.n,
                     "n_train": len(splits.train_labels), "finetune_s": time.perf_counter() - t0, "eval_s": 0.0,
                     "recipe_key": ""})
    return rows


def write_table(sweep_dir: str, task: str, table: pd.DataFrame) -> None:
    """downstream.parquet: this task's rows replace its old ones; other tasks' rows are kept."""
    path = storage.join(sweep_dir, "downstream.parquet")
    if storage.exists(path):
        old = read_table(sweep_dir)
        table = pd.concat([old[old["task"] != task], table], ignore_index=True)
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    storage.write_bytes_atomic(path, buf.getvalue())


def read_table(sweep_dir: str) -> pd.DataFrame:
    fs, path = storage.fs_and_path(storage.join(sweep_dir, "downstream.parquet"))
    with fs.open(path, "rb") as f:
        return pd.read_parquet(io.BytesIO(f.read()))

