"""A sweep cell as Tune sees it: its content-keyed id and full training config (`PlannedCell`), and
the trial that trains it. The vocabulary the runner and the wsd_branches trials share."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from llm_ray.core.config import TrainJobConfig, validate_train_job
from llm_ray.core.plan import Cell, cell_key
from llm_ray.training.launch import RunSpec

# Keys that do not change what a cell trains: excluded from its content key.
BOOKKEEPING = {"trainer": ("name", "storage_path", "log_every", "checkpoint_every", "num_to_keep",
                           "max_failures", "peak_flops", "fail_at_step"),
               "data": ("cache_dir",), "resources": ("address", "local_num_cpus")}


class PlannedCell(NamedTuple):
    """A cell of the plan with its content-keyed id and its full training config."""

    cell_id: str
    cell: Cell
    job: TrainJobConfig


def cell_job(base: TrainJobConfig, cell: Cell, cells_dir: str, group: str) -> PlannedCell:
    """The full training config of one cell, and its content-keyed id (`C2e11-N87.4k-3f9a1c2b7e`)."""
    model = dataclasses.replace(base.model, n_layer=cell.n_layer, d_model=cell.d_model,
                                n_head=cell.n_head, d_ff=cell.d_ff)
    trainer = dataclasses.replace(base.trainer, tokens=float(cell.tokens), lr=cell.lr,
                                  seed=base.trainer.seed + cell.seed, warmup_steps=cell.warmup_steps,
                                  global_batch_tokens=cell.global_batch_tokens, num_workers=cell.num_workers,
                                  storage_path=cells_dir)
    job = dataclasses.replace(base, model=model, trainer=trainer,
                              wandb=dataclasses.replace(base.wandb, group=group))
    cell_id = f"{cell.name}-{content_key(job)}"
    job = dataclasses.replace(job, trainer=dataclasses.replace(trainer, name=cell_id))
    validate_train_job(job)
    return PlannedCell(cell_id=cell_id, cell=cell, job=job)


def content_key(job: TrainJobConfig, drop_trainer: tuple = ()) -> str:
    """The key of what a job trains: its config without bookkeeping (and without `drop_trainer`)."""
    keyed = {k: {kk: vv for kk, vv in v.items()
                 if kk not in BOOKKEEPING.get(k, ()) and not (k == "trainer" and kk in drop_trainer)}
             for k, v in dataclasses.asdict(job).items() if k != "wandb"}
    return cell_key(keyed)


def cell_trial(spec: RunSpec) -> dict:
    """What Tune's trial holds: the spec, and beside it in plain values what the driver reads (the
    trial's name, resources, FLOPs for the progress line) and what must exist before it may start
    (`needs`: a branch's trunk point). `flops` is what the trial trains itself, `skip_flops` what
    its run inherits from a checkpoint it starts from."""
    return {"cell": dict(spec.cell), "resources": cell_resources(spec), "spec": spec,
            "flops": spec.cell["budget"], "skip_flops": 0.0, "needs": None}


def cell_resources(spec: RunSpec) -> dict:
    """An in-process cell's trial holds its worker's CPUs; otherwise the trial only drives its
    TorchTrainer and the Train workers hold the real resources."""
    return {"CPU": spec.job.resources.cpus_per_worker} if spec.in_process else {"CPU": 0.01}
