"""`python -m llm_ray.sweep [overrides]`: an IsoFLOP sweep, model size x compute budget, on Ray Tune.

    python -m llm_ray.sweep                                   # the embedded default (local, CPU)
    python -m llm_ray.sweep sweep=smoke                       # 3 sizes x 2 budgets, tiny models
    python -m llm_ray.sweep 'sweep.budgets=[1e12,3e12]' sweep.dry_run=true

config -> plan (llm_ray.plan) -> one Tune trial per cell, each a Ray Train + DeepSpeed run
(llm_ray.launch) -> results table (llm_ray.results) -> fitted law (llm_ray.fitting) -> report.md.
Cells are keyed by a hash of their full training config: re-running a sweep trains only the cells
without a finished result, so a crashed driver or an added budget costs no retraining.
"""

from __future__ import annotations

import dataclasses
import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from llm_ray import storage
from llm_ray.config import TrainJobConfig, job_from_dict, register_configs, validate_train_job
from llm_ray.plan import Cell, SweepConfig, cell_key, format_plan, plan_cells

register_configs()
# A diverged cell is an answer (that size cannot use that budget); a failed one is retried on re-run.
FINISHED = ("ok", "diverged")


def _register_sweep_configs() -> None:
    from hydra.core.config_store import ConfigStore

    from llm_ray.fit import register_configs as register_fit_configs

    ConfigStore.instance().store(group="sweep", name="sweep_schema", node=SweepConfig)
    register_fit_configs()


_register_sweep_configs()

# Keys that do not change what a cell trains: excluded from its content key.
BOOKKEEPING = {"trainer": ("name", "storage_path", "log_every", "checkpoint_every", "num_to_keep",
                           "max_failures", "peak_flops", "fail_at_step"),
               "data": ("cache_dir",), "resources": ("address", "local_num_cpus")}


def cell_job(base: TrainJobConfig, cell: Cell, cells_dir: str, group: str) -> tuple[str, TrainJobConfig]:
    """The full training config of one cell, and its content-keyed id (`C2e11-N87.4k-3f9a1c2b7e`)."""
    model = dataclasses.replace(base.model, n_layer=cell.n_layer, d_model=cell.d_model,
                                n_head=cell.n_head, d_ff=cell.d_ff)
    trainer = dataclasses.replace(base.trainer, tokens=float(cell.tokens), lr=cell.lr,
                                  global_batch_tokens=cell.global_batch_tokens,
                                  num_workers=cell.num_workers, storage_path=cells_dir)
    job = dataclasses.replace(base, model=model, trainer=trainer,
                              wandb=dataclasses.replace(base.wandb, group=group))
    d = dataclasses.asdict(job)
    keyed = {k: ({kk: vv for kk, vv in v.items() if kk not in BOOKKEEPING.get(k, ())})
             for k, v in d.items() if k != "wandb"}
    cell_id = f"{cell.name}-{cell_key(keyed)}"
    return cell_id, dataclasses.replace(job, trainer=dataclasses.replace(trainer, name=cell_id))


def run_cell(config: dict) -> None:
    """Tune trial driver: one Ray Train + DeepSpeed run. A failure is recorded, not raised, so the
    sweep goes on and the fit excludes the cell with its reason."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from llm_ray.data import PreparedData
    from llm_ray.launch import build_trainer

    t_trial_start = time.time()
    config = config["cell_config"]
    job = job_from_dict(config["job"])
    run_dir = config["run_dir"]
    trainer = build_trainer(job, PreparedData.from_dict(config["data"]), run_dir=run_dir,
                            cell=config["cell"], callbacks=[TuneReportCallback()],
                            in_process=config["in_process"])
    try:
        trainer.fit()
    except Exception as err:  # noqa: BLE001 - any training failure is a result of the sweep
        storage.write_json(storage.join(run_dir, "result.json"), {
            "run_id": job.trainer.name, "status": "failed", "reason": f"{type(err).__name__}: {err}"[:2000],
            "cell": config["cell"], "history": []})
    # Trial-level timing, for the overhead benchmark (bench/bench_sweep.py).
    storage.write_json(storage.join(run_dir, "trial.json"),
                       {"t_trial_start": t_trial_start, "t_trial_end": time.time(), "pid": os.getpid()})


def _trial_resources(config: dict) -> dict:
    """An in-process cell's trial holds its worker's CPUs; otherwise the trial only drives its
    TorchTrainer and the Train workers hold the real resources."""
    cell_config = config["cell_config"]
    if cell_config["in_process"]:
        return {"CPU": cell_config["job"]["resources"]["cpus_per_worker"]}
    return {"CPU": 0.01}


def _say(message: str) -> None:
    """Print, looked up at call time: Tune pickles its callbacks, and Ray may have replaced
    builtins.print by then, so the callback must not hold the print function itself."""
    print(message, flush=True)


def make_progress_callback(cells: dict, total_cells: int, already_done: int):
    """A Tune callback that prints cells done / running / pending and an ETA from FLOPs done."""
    from ray import tune

    class SweepProgress(tune.Callback):
        def __init__(self):
            self.t0 = time.time()
            self.running, self.done, self.flops_done = set(), 0, 0.0
            self.flops_total = sum(c["budget"] for c in cells.values())

        def _print(self):
            pending = total_cells - already_done - self.done - len(self.running)
            elapsed = time.time() - self.t0
            eta = (elapsed / self.flops_done * (self.flops_total - self.flops_done)
                   if self.flops_done else float("nan"))
            _say(f"sweep: {already_done + self.done}/{total_cells} cells done, {len(self.running)} running,"
                 f" {pending} pending; elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min")

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._print()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.done += 1
            self.flops_done += trial.config["cell_config"]["cell"]["budget"]
            self._print()

        on_trial_error = on_trial_complete

    return SweepProgress()


def run_sweep(base: TrainJobConfig, sweep: SweepConfig, fit_cfg, log=print) -> dict:
    """Plan, train the unfinished cells, gather results, fit, report. Returns a summary dict."""
    from llm_ray.launch import init_ray, prepare, resolve_paths

    validate_train_job(base)
    base = resolve_paths(base)
    root = storage.to_local_or_url(sweep.storage_path or base.trainer.storage_path)
    sweep_dir = storage.join(root, sweep.name)
    cells_dir = storage.join(sweep_dir, "cells")
    m, t = base.model, base.trainer
    cells, dropped = plan_cells(
        sweep, seq_len=m.seq_len, vocab_size=m.vocab_size, tie_embeddings=m.tie_embeddings, lr=t.lr,
        global_batch_tokens=t.global_batch_tokens, micro_batch_tokens=t.micro_batch_size * m.seq_len,
        warmup_steps=t.warmup_steps, num_workers=t.num_workers)
    if not cells:
        raise ValueError("the sweep plan has no cells left after dropping: widen sweep.sizes, "
                         "sweep.budgets or sweep.tokens_per_param.\n" + format_plan(cells, dropped, 1))
    jobs = {}
    for cell in cells:
        cell_id, job = cell_job(base, cell, cells_dir, group=sweep.name)
        validate_train_job(job)
        jobs[cell_id] = (cell, job)
    log(f"sweep {sweep.name}: {sweep_dir}")
    log(format_plan(cells, dropped, sweep.est_flops_per_s))
    plan_record = {"sweep": dataclasses.asdict(sweep),
                   "cells": {cid: {**dataclasses.asdict(c), "name": c.name} for cid, (c, _) in jobs.items()},
                   "dropped": [dataclasses.asdict(d) for d in dropped]}
    if sweep.dry_run:
        return {"sweep_dir": sweep_dir, "plan": plan_record, "trained": []}
    storage.write_json(storage.join(sweep_dir, "plan.json"), plan_record)

    finished = {cid for cid in jobs if _finished(storage.join(cells_dir, cid))}
    pending = [cid for cid in jobs if cid not in finished]
    log(f"sweep: {len(finished)} cells already finished (kept), {len(pending)} to train")
    if pending:
        data = prepare(base, log=log)
        peak = _measured_peak(base, log)
        jobs = {cid: (cell, dataclasses.replace(job, trainer=dataclasses.replace(job.trainer, peak_flops=peak)))
                for cid, (cell, job) in jobs.items()}
        init_ray(base)
        _tune(pending, jobs, data, sweep, base, sweep_dir, cells_dir, len(jobs), len(finished), log)

    from llm_ray.results import collect_results, write_results

    table = collect_results(cells_dir, {cid: c for cid, (c, _) in jobs.items()})
    write_results(table, sweep_dir)
    from llm_ray.report import fit_and_report

    summary = fit_and_report(sweep_dir, table, fit_cfg, plan_record, log=log, wandb_cfg=base.wandb)
    return {"sweep_dir": sweep_dir, "plan": plan_record, "trained": pending, **summary}


def _measured_peak(job: TrainJobConfig, log):
    """Measure the CPU matmul peak once for the whole sweep (not in every trial's start-up)."""
    if job.trainer.peak_flops is not None or job.resources.use_gpu:
        return job.trainer.peak_flops
    import torch

    from llm_ray.hardware import measure_matmul_peak

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(job.resources.cpus_per_worker)))
    peak = measure_matmul_peak(seconds=1.0)
    torch.set_num_threads(threads)
    log(f"sweep: measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s per worker (MFU denominator)")
    return peak


def _finished(run_dir: str) -> bool:
    path = storage.join(run_dir, "result.json")
    return storage.exists(path) and storage.read_json(path).get("status") in FINISHED


def _tune(pending, jobs, data, sweep, base, sweep_dir, cells_dir, n_total, n_done, log) -> None:
    import ray
    from ray import tune

    per_trial = {"CPU": base.resources.cpus_per_worker}
    concurrency = sweep.max_concurrent_trials
    if concurrency is None:
        cpus = ray.cluster_resources().get("GPU" if base.resources.use_gpu else "CPU", 1)
        need = max(jobs[c][0].num_workers for c in pending) * (1 if base.resources.use_gpu else per_trial["CPU"])
        concurrency = max(1, int(cpus // need)) if base.resources.use_gpu else max(1, int((cpus - 1) // need))
    configs = [{"job": dataclasses.asdict(jobs[c][1]), "data": data.to_dict(),
                "run_dir": storage.join(cells_dir, c),
                # sweep.train_in_process: see SweepConfig. Sharded and GPU cells use Train workers.
                "in_process": (sweep.train_in_process and jobs[c][0].num_workers == 1
                               and not base.resources.use_gpu),
                "cell": {"cell_id": c, "sweep": sweep.name, "name": jobs[c][0].name,
                         **dataclasses.asdict(jobs[c][0])}}
               for c in pending]
    # Biggest budgets first: the long cells start early, small ones fill the gaps.
    configs.sort(key=lambda x: -x["cell"]["budget"])
    tune_path, tune_fs = storage.ray_storage(sweep_dir)
    progress = make_progress_callback({c["cell"]["cell_id"]: c["cell"] for c in configs}, n_total, n_done)
    tuner = tune.Tuner(
        tune.with_resources(run_cell, _trial_resources),
        param_space={"cell_config": tune.grid_search(configs)},
        # A fresh process per trial: an in-process cell leaves DeepSpeed's module-level state (its
        # cached process groups) behind, which the next cell's new process group would not match.
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name, reuse_actors=False),
        run_config=tune.RunConfig(name="tune", storage_path=tune_path, storage_filesystem=tune_fs,
                                  callbacks=[progress], verbose=0),
    )
    log(f"sweep: {len(pending)} trials, {concurrency} at a time")
    _keep_cloud_secrets_out_of_trial_runtime_env()
    tuner.fit()


def _keep_cloud_secrets_out_of_trial_runtime_env() -> None:
    """Ray Tune copies AWS credentials from the driver's environment into every trial's runtime_env,
    which Ray's runtime-env agent writes to its log and the dashboard shows. Trials inherit
    credentials from their node's environment anyway (a local cluster's from this process, a
    cluster's from its pods), so the secrets are taken off Tune's propagation list
    (ray.tune.execution.class_cache, Ray 2.60)."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE -= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                          "AWS_SECURITY_TOKEN"}


def _trial_name(trial) -> str:
    """Tune trials are named by their cell id (sweep coordinates + content key)."""
    return trial.config["cell_config"]["cell"]["cell_id"]


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
def main(cfg: DictConfig) -> None:
    from llm_ray.fitting.config import FitConfig
    from llm_ray.train import job_from_hydra

    sweep = OmegaConf.to_object(cfg.sweep)
    fit_cfg = OmegaConf.to_object(cfg.fit)
    assert isinstance(sweep, SweepConfig) and isinstance(fit_cfg, FitConfig)
    summary = run_sweep(job_from_hydra(cfg), sweep, fit_cfg)
    print(f"sweep directory: {summary['sweep_dir']}")
    if "report" in summary:
        print(f"report: {summary['report']}")


if __name__ == "__main__":
    main()
