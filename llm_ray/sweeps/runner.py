"""An IsoFLOP sweep on Ray Tune: plan -> one Tune trial per unfinished cell -> the results table.

Each trial runs one Ray Train + DeepSpeed run (`llm_ray.training.launch`). Cells are keyed by a hash
of their full training config: re-running a sweep trains only the cells without a finished result,
so a crashed driver or an added budget costs no retraining. With sweep.schedule=wsd_branches the
cells are cooldown branches of shared constant-lr trunks (llm_ray.sweeps.branches).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from llm_ray.core.branches import (check_branchable, drop_unbranchable, format_spent, plan_trunks,
                                   shared_warmup, spent_flops)
from llm_ray.core.config import TrainJobConfig, validate_train_job
from llm_ray.core.plan import PlanContext, SweepConfig, format_plan, minima_replicates, plan_cells
from llm_ray.core.records import PlanRecord, RunRecord
from llm_ray.core.secrets import redact_sources, secret_values
from llm_ray.data import PreparedData
from llm_ray.io import storage
from llm_ray.io.sweepdir import SweepDir, is_finished
from llm_ray.sweeps.cells import PlannedCell, cell_job, cell_trial, content_key  # noqa: F401 - callers' names
from llm_ray.training.launch import RunSpec

@dataclass(frozen=True)
class SweepRun:
    """What a sweep produced: where it lives, its plan, which cells this call trained, the table."""

    sweep_dir: str
    plan: PlanRecord
    trained: list
    table: pd.DataFrame
    base: TrainJobConfig
    """The sweep's base job with its paths resolved (storage, data cache, W&B directory)."""


def sweep_base(base: TrainJobConfig, sweep: SweepConfig) -> TrainJobConfig:
    """The base job of the sweep's cells: sweep.schedule=wsd_branches trains every cell under
    trainer.schedule=wsd (its cooldown settings as given)."""
    if sweep.schedule != "wsd_branches":
        return base
    return dataclasses.replace(base, trainer=dataclasses.replace(base.trainer, schedule="wsd"))


def sweep_dir_of(base: TrainJobConfig, sweep: SweepConfig) -> str:
    """The sweep's directory, `<sweep.storage_path or trainer.storage_path>/<sweep.name>` (absolute)."""
    from llm_ray.training.launch import resolve_paths

    root = sweep.storage_path or resolve_paths(base).trainer.storage_path
    return storage.join(storage.to_local_or_url(root), sweep.name)


def plan_context(base: TrainJobConfig, train_tokens: Optional[int]) -> PlanContext:
    m, t = base.model, base.trainer
    return PlanContext(seq_len=m.seq_len, vocab_size=m.vocab_size, tie_embeddings=m.tie_embeddings, lr=t.lr,
                       global_batch_tokens=t.global_batch_tokens, micro_batch_tokens=t.micro_batch_size * m.seq_len,
                       warmup_steps=t.warmup_steps, num_workers=t.num_workers, train_tokens=train_tokens,
                       family=m.family, qk_norm=m.qk_norm, bias=m.bias)


def plan_sweep(base: TrainJobConfig, sweep: SweepConfig, data: Optional[PreparedData] = None
               ) -> tuple[str, list[PlannedCell], PlanRecord]:
    """(sweep directory, planned cells, the plan record written to plan.json); no side effects.
    Without `data` (a dry run) epochs are unknown and sweep.max_epochs is not applied."""
    sweep_dir = sweep_dir_of(base, sweep)
    ctx = plan_context(base, data.n_train_tokens if data else None)
    check_branchable(sweep)
    cells, dropped = plan_cells(sweep, **dataclasses.asdict(ctx))
    if sweep.schedule == "wsd_branches":
        cells = shared_warmup(cells, sweep)
    fraction = base.trainer.cooldown_fraction
    if base.trainer.schedule == "wsd":
        cells, unbranchable = drop_unbranchable(cells, fraction)
        dropped += unbranchable
    if not cells:
        raise ValueError("the sweep plan has no cells left after dropping: widen sweep.sizes, "
                         "sweep.budgets or sweep.tokens_per_param, or add text.\n" + format_plan(cells, dropped, 1))
    planned = [cell_job(base, c, storage.join(sweep_dir, "cells"), group=sweep.name) for c in cells]
    spent = spent_flops(shared_warmup(cells, sweep), fraction)  # both schedules, printed before anything trains
    trunks = None
    if sweep.schedule == "wsd_branches":
        trunks = tuple({"name": t.name, "steps": t.steps, "points": list(t.points),
                        "cells": [c.name for c in t.cells]} for t in plan_trunks(cells, fraction))
    record = PlanRecord(sweep=sweep, train_tokens=ctx.train_tokens, cells={p.cell_id: p.cell for p in planned},
                        val_lines_in_train=data.val_lines_in_train if data else None,
                        dropped=tuple(dropped), trunks=trunks,
                        table=format_plan(cells, dropped, sweep.est_flops_per_s) + "\n"
                        + format_spent(spent, sweep.schedule, fraction),
                        flops_to_spend={"independent": spent.independent, "wsd_branches": spent.branched,
                                        "trunks": spent.trunks, "cooldowns": spent.cooldowns})
    return sweep_dir, planned, record


def run_sweep_cells(base: TrainJobConfig, sweep: SweepConfig, log=print) -> SweepRun:
    """Plan, train the unfinished cells, and write the results table (results.parquet/.csv)."""
    from llm_ray.sweeps.results import collect_results, write_results
    from llm_ray.training.launch import prepare, resolve_paths, with_data_vocab

    validate_train_job(base)
    base = sweep_base(resolve_paths(base), sweep)
    data = None if sweep.dry_run else prepare(base, log=log)
    base = with_data_vocab(base, data) if data else base
    # The corpus is read: from here on, no credential of data.sources travels (Tune's state, records).
    base = redact_sources(base, secret_values(os.environ))
    sweep_dir, planned, plan_record = plan_sweep(base, sweep, data)
    log(f"sweep {sweep.name}: {sweep_dir}")
    log(plan_record.table)
    if sweep.dry_run:
        return SweepRun(sweep_dir=sweep_dir, plan=plan_record, trained=[], table=pd.DataFrame(), base=base)
    SweepDir(sweep_dir).write_plan(plan_record)

    cells_dir = storage.join(sweep_dir, "cells")
    pending = [p for p in planned if not is_finished(storage.join(cells_dir, p.cell_id))]
    log(f"sweep: {len(planned) - len(pending)} cells already finished (kept), {len(pending)} to train")
    if pending:
        train_cells(pending, base, data, sweep, sweep_dir, n_total=len(planned), log=log)
    table = collect_results(cells_dir, {p.cell_id: p.cell for p in planned})
    replicas, todo, plan_record = train_replicates(base, sweep, data, sweep_dir, planned, table, plan_record, log)
    if replicas:
        pending += todo
        table = collect_results(cells_dir, {p.cell_id: p.cell for p in planned + replicas})
    write_results(table, sweep_dir)
    return SweepRun(sweep_dir=sweep_dir, plan=plan_record, trained=[p.cell_id for p in pending], table=table,
                    base=base)


def train_replicates(base: TrainJobConfig, sweep: SweepConfig, data: PreparedData, sweep_dir: str,
                     planned: list[PlannedCell], table: pd.DataFrame, plan_record: PlanRecord, log=print
                     ) -> tuple[list[PlannedCell], list[PlannedCell], PlanRecord]:
    """sweep.replicate_minima: each budget's lowest-loss cell trained again with other seeds, keyed and
    resumed like the cells (listed in plan.json `replicates`). Returns (all replicates, those trained
    now, the plan record that lists them)."""
    cells_dir = storage.join(sweep_dir, "cells")
    done = ok_cells(table)
    final = table[table["final"]].set_index("cell_id")["loss"]
    replicas = [cell_job(base, c, cells_dir, group=sweep.name) for c in minima_replicates(
        [(p.cell, float(final[p.cell_id])) for p in planned if p.cell_id in done], sweep.replicate_minima)]
    if not replicas:
        return [], [], plan_record
    plan_record = dataclasses.replace(plan_record, replicates={p.cell_id: p.cell for p in replicas})
    SweepDir(sweep_dir).write_plan(plan_record)
    todo = [p for p in replicas if not is_finished(storage.join(cells_dir, p.cell_id))]
    log(f"sweep: {len(replicas) - len(todo)} seed replicates of the budgets' minima already finished (kept), "
        f"{len(todo)} to train")
    if todo:
        train_cells(todo, base, data, sweep, sweep_dir, n_total=len(replicas), log=log)
    return replicas, todo, plan_record


def ok_cells(table: pd.DataFrame) -> set:
    """Cells whose final point is a finished, finite loss."""
    final = table[table["final"] & (table["status"] == "ok")]
    return set(final.loc[final["loss"].notna() & (final["loss"] < float("inf")), "cell_id"])


def train_cells(pending: list[PlannedCell], base: TrainJobConfig, data: PreparedData, sweep: SweepConfig,
                stage_dir: str, *, n_total: int, log=print, trunks_dir: Optional[str] = None) -> None:
    """Measure the peak once, then one Tune trial per pending cell: each writes into
    `<stage_dir>/cells/<cell_id>`, Tune's own state goes to `<stage_dir>/tune`. With
    sweep.schedule=wsd_branches the cells are cooldown branches of trunks whose checkpoints are kept
    in `trunks_dir` (default `<stage_dir>/trunks`; llm_ray.sweeps.branches)."""
    from llm_ray.training.launch import init_ray

    peak = measured_peak(base, log)
    init_ray(base)
    specs = [cell_spec(p, data, sweep, stage_dir, peak) for p in pending]
    if sweep.schedule == "wsd_branches":
        from llm_ray.sweeps.branches import branch_trials

        trials = branch_trials(pending, specs, trunks_dir or storage.join(stage_dir, "trunks"), log=log)
    else:
        # Biggest budgets first: the long cells start early, small ones fill the gaps.
        trials = sorted((cell_trial(s) for s in specs), key=lambda t: -t["flops"])
    concurrency = sweep.max_concurrent_trials or default_concurrency(base, max(p.cell.num_workers for p in pending))
    log(f"sweep: {len(trials)} trials, {concurrency} at a time")
    tune_cells(trials, stage_dir, concurrency, n_total=n_total, n_done=n_total - len(pending), log=log)


def cell_spec(p: PlannedCell, data: PreparedData, sweep: SweepConfig, stage_dir: str,
              peak: Optional[float]) -> RunSpec:
    """A cell's run: its job (with the sweep's measured peak), data, directory and coordinates."""
    return RunSpec(job=dataclasses.replace(p.job, trainer=dataclasses.replace(p.job.trainer, peak_flops=peak)),
                   data=data, run_dir=storage.join(stage_dir, "cells", p.cell_id),
                   cell={"cell_id": p.cell_id, "sweep": sweep.name, "name": p.cell.name, **dataclasses.asdict(p.cell)},
                   # sweep.train_in_process (SweepConfig). Sharded and GPU cells use Train workers.
                   in_process=(sweep.train_in_process and p.cell.num_workers == 1 and not p.job.resources.use_gpu))


def default_concurrency(base: TrainJobConfig, workers_per_cell: int) -> int:
    """As many trials as the cluster holds: its GPUs, or its CPUs less one for the drivers."""
    import ray

    if base.resources.use_gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 1) // workers_per_cell))
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int((cpus - 1) // (workers_per_cell * base.resources.cpus_per_worker)))


def tune_cells(trials: list[dict], stage_dir: str, concurrency: int, *, n_total: int, n_done: int,
               log=print) -> None:
    from ray import tune

    from llm_ray.sweeps.branches import BranchTrials
    from llm_ray.sweeps.progress import make_progress_callback

    # Tune's TensorBoard logger says at INFO, per trial, that it cannot log the RunSpec in the config
    # (a long repr); its files are still written.
    logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
    tune_path, tune_fs = storage.ray_storage(stage_dir)
    progress = make_progress_callback(n_total, n_done, sum(t["flops"] for t in trials), storage.join(stage_dir, "cells"))
    tuner = tune.Tuner(
        tune.with_resources(run_cell, lambda config: config["trial"]["resources"]),
        # The trials in order, each once what it needs exists (BranchTrials). Tune resolves objects
        # in a config only inside the trial: what the driver reads (name, progress, resources)
        # stays in plain values beside the spec.
        # Trial processes are reused (no new process and no torch/DeepSpeed imports per cell):
        # each run drops the process group DeepSpeed cached from the last (engine.init_distributed).
        tune_config=tune.TuneConfig(search_alg=BranchTrials(trials, log=log), num_samples=len(trials),
                                    max_concurrent_trials=concurrency, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name, reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=tune_path, storage_filesystem=tune_fs,
                                  callbacks=[progress], verbose=0),
    )
    keep_cloud_secrets_out_of_trial_runtime_env()
    ctrl_c_stops_the_command()
    tuner.fit()


def ctrl_c_stops_the_command() -> None:
    """By default Tune answers Ctrl-C (SIGINT) by ending its run and returning normally, so the
    command would go on to fit and report a partial sweep. Tune's own switch leaves SIGINT to Python:
    KeyboardInterrupt leaves `fit()`, the command says how to resume (llm_ray.cli.run_command), and
    every finished cell's record is already on disk (a re-run trains only the rest)."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def run_cell(config: dict) -> None:
    """Tune trial driver: one Ray Train + DeepSpeed run. A failure is recorded, not raised, so the
    sweep goes on and the fit excludes the cell with its reason."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from llm_ray.training.engine import release_process_group
    from llm_ray.training.launch import build_trainer

    t_trial_start = time.time()
    spec: RunSpec = config["trial"]["spec"]
    try:
        build_trainer(spec, callbacks=[TuneReportCallback()]).fit()
    except Exception as err:  # noqa: BLE001 - any training failure is a result of the sweep
        record = RunRecord.failed(spec.job.trainer.name, f"{type(err).__name__}: {err}", spec.cell)
        storage.write_json(storage.join(spec.run_dir, "result.json"), record.to_json())
    finally:
        if spec.in_process:  # the process may run the next cell (reuse_actors)
            release_process_group()
    # Trial-level timing, for the overhead benchmark (bench/bench_sweep.py).
    storage.write_json(storage.join(spec.run_dir, "trial.json"),
                       {"t_trial_start": t_trial_start, "t_trial_end": time.time(), "pid": os.getpid()})


def measured_peak(job: TrainJobConfig, log):
    """Measure the CPU matmul peak once for the whole sweep (not in every trial's start-up)."""
    if job.trainer.peak_flops is not None or job.resources.use_gpu:
        return job.trainer.peak_flops
    import torch

    from llm_ray.training.hardware import measure_matmul_peak

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(job.resources.cpus_per_worker)))
    peak = measure_matmul_peak(seconds=1.0)
    torch.set_num_threads(threads)
    log(f"sweep: measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s per worker (MFU denominator)")
    return peak


CLOUD_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def keep_cloud_secrets_out_of_trial_runtime_env() -> None:
    """Ray Tune copies AWS credentials from the driver's environment into every trial's runtime_env,
    which Ray's runtime-env agent writes to its log and the dashboard shows. Trials inherit
    credentials from their node's environment anyway (a local cluster's from this process, a
    cluster's from its pods), so the secrets are taken off Tune's propagation list.

    Reaches into Ray's private `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE` (checked
    against Ray 2.60.0); tests/test_ray_internals.py fails loudly if it moves."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE -= set(CLOUD_SECRETS)


def trial_name(trial) -> str:
    """Tune trials are named by their cell id (sweep coordinates + content key)."""
    return trial.config["trial"]["cell"]["cell_id"]
