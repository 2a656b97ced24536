"""`python -m llm_ray.compress sweep_dir=... [compress.key=value ...]`: every finished cell of a sweep,
quantized and pruned after training, its loss measured on the sweep's own held-out windows.

    python -m llm_ray.compress sweep_dir=/abs/runs/isoflop
    python -m llm_ray.compress sweep_dir=/abs/runs/isoflop 'compress.group_bits=[4,3,2]' compress.group_size=16
    python -m llm_ray.sweep 'sweep.stages=[compress]'        # the same, right after a sweep's fit

Writes compress.parquet, compress_fit.json, the compress_*.png plots and compress.md (inlined by
report.md) beside the sweep, and a W&B `compress` run in the sweep's group. Re-running evaluates only the
(cell, setting) pairs not measured yet. The work is `llm_ray.stages.compress`.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import command


def run_on_sweep(sweep_dir: str, cfg: DictConfig, log=print):
    """The stage on one sweep directory with the `compress`, `wandb` and `resources` groups of `cfg`
    (the sweep's own composed config, or this command's)."""
    from llm_ray.stages.registry import get

    return get("compress").run(sweep_dir, check(cfg), wandb=OmegaConf.to_object(cfg.wandb),
                               resources=OmegaConf.to_object(cfg.resources), log=log)


def check(cfg: DictConfig):
    """The typed stage config (CompressConfig validates itself): `llm_ray.sweep` calls this before any
    cell trains, so a bad setting fails at once, not after the sweep."""
    from llm_ray.stages.registry import get, stage_config

    stage = get("compress")
    return stage.check(stage_config(stage, cfg))


@command("compress")
def main(cfg: DictConfig) -> None:
    from hydra.utils import to_absolute_path

    from llm_ray.io import storage

    if OmegaConf.is_missing(cfg, "sweep_dir"):
        raise ValueError("sweep_dir=PATH is required: a sweep's directory (<trainer.storage_path>/<sweep.name>), "
                         "local or a URL.")
    sweep_dir = str(cfg.sweep_dir)
    sweep_dir = storage.to_local_or_url(sweep_dir if "://" in sweep_dir else to_absolute_path(sweep_dir))
    run = run_on_sweep(sweep_dir, cfg)
    print(f"compress: {len(run.evaluated)} evaluated, {len(run.table)} rows in {sweep_dir}/compress.parquet; "
          f"report: {sweep_dir}/report.md")


if __name__ == "__main__":
    main()
