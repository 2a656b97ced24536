"""`python -m llm_ray.sweep [overrides]`: an IsoFLOP sweep, model size x compute budget, on Ray Tune.

    python -m llm_ray.sweep                                   # the embedded default (local, CPU)
    python -m llm_ray.sweep sweep=smoke                       # 3 sizes x 2 budgets, tiny models
    python -m llm_ray.sweep 'sweep.budgets=[1e12,3e12]' sweep.dry_run=true

config -> plan (llm_ray.core.plan) -> one Tune trial per cell (llm_ray.sweeps) -> results table ->
fitted law and report (llm_ray.reporting). A re-run trains only the cells without a finished result.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import command, job_from_hydra
from llm_ray.core.config import TrainJobConfig
from llm_ray.core.plan import SweepConfig
from llm_ray.fitting.config import FitConfig


def run_sweep(base: TrainJobConfig, sweep: SweepConfig, fit_cfg: FitConfig, log=print) -> dict:
    """Train the sweep's unfinished cells, then fit and report. Returns a summary dict. One driver per
    sweep directory: a second one exits with a message naming the first (llm_ray.io.lease)."""
    from llm_ray.io.lease import DriverLease
    from llm_ray.sweeps.runner import sweep_dir_of

    if sweep.dry_run:
        return _train_fit_report(base, sweep, fit_cfg, log)
    with DriverLease(sweep_dir_of(base, sweep)):
        return _train_fit_report(base, sweep, fit_cfg, log)


def _train_fit_report(base: TrainJobConfig, sweep: SweepConfig, fit_cfg: FitConfig, log) -> dict:
    from llm_ray.reporting.fit import fit_and_report
    from llm_ray.sweeps.runner import run_sweep_cells

    run = run_sweep_cells(base, sweep, log=log)
    out = {"sweep_dir": run.sweep_dir, "plan": run.plan, "trained": run.trained}
    if sweep.dry_run:
        return out
    fit = fit_and_report(run.sweep_dir, run.table, fit_cfg, run.plan, log=log, wandb_cfg=run.base.wandb)
    return {**out, "report": f"{run.sweep_dir}/report.md", "fit": fit}


def sweep_stages(cfg: DictConfig) -> list:
    """(stage, its typed config) for each name in sweep.stages (llm_ray.stages.registry), each checked
    before anything trains: an unknown name or a bad setting fails at once, not after the sweep."""
    from llm_ray.stages.registry import get, stage_config

    stages = [get(str(name), in_sweep=True) for name in cfg.sweep.stages]
    return [(s, s.check(stage_config(s, cfg))) for s in stages]


@command("sweep")
def main(cfg: DictConfig) -> None:
    from llm_ray.stages.registry import get

    sweep = OmegaConf.to_object(cfg.sweep)
    stages = sweep_stages(cfg)
    job = job_from_hydra(cfg)
    summary = run_sweep(job, sweep, OmegaConf.to_object(cfg.fit))
    if sweep.held_out_budgets and not sweep.dry_run and summary["fit"].error is None:
        # The corpus URLs as given (the records keep any credential in them masked).
        get("validate").run(summary["sweep_dir"], sweep.held_out_budgets, sources=list(job.data.sources))
    for stage, config in ([] if sweep.dry_run else stages):
        stage.run(summary["sweep_dir"], config, wandb=OmegaConf.to_object(cfg.wandb),
                  resources=OmegaConf.to_object(cfg.resources))
    print(f"sweep directory: {summary['sweep_dir']}")
    if "report" in summary:
        print(f"report: {summary['report']}")


if __name__ == "__main__":
    main()
