"""`python -m llm_ray.downstream sweep_dir=PATH [downstream=zh_sentiment] [overrides]`: fine-tune every
finished cell of a sweep on a labelled task and map accuracy against pre-training compute.

    python -m llm_ray.downstream sweep_dir=/abs/runs/zh_sentiment
    python -m llm_ray.downstream sweep_dir=/abs/runs/x downstream=jsonl downstream.path=/abs/reviews.jsonl
    python -m llm_ray.sweep +experiment=zh_sentiment          # the sweep, then this stage (sweep.stages)

Writes downstream.parquet, downstream.md and the plots into the sweep directory and re-renders its
report.md (llm_ray.stages.downstream). A re-run fine-tunes nothing twice.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import command


def run_on_sweep(sweep_dir: str, cfg: DictConfig, log=print):
    """The stage on a finished sweep; `cfg` is the sweep's composed config (or this command's): its
    `downstream` group, and `resources` / `wandb` when present (else the sweep's own)."""
    from llm_ray.stages.registry import get, stage_config

    stage = get("downstream")
    resources = OmegaConf.to_object(cfg.resources) if "resources" in cfg else None
    wandb_cfg = OmegaConf.to_object(cfg.wandb) if "wandb" in cfg else None
    return stage.run(sweep_dir, stage_config(stage, cfg), wandb=wandb_cfg, resources=resources, log=log)


def check(cfg: DictConfig):
    """What can be checked before the sweep trains: the downstream config, and the task's records and
    splits (a typo in downstream.* fails at once, not after the pre-training)."""
    from llm_ray.stages.registry import get, stage_config

    stage = get("downstream")
    return stage.check(stage_config(stage, cfg))


@command("downstream")
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "sweep_dir"):
        raise ValueError("sweep_dir=PATH is required: the directory a sweep wrote (absolute path or URL).")
    table = run_on_sweep(str(cfg.sweep_dir), cfg)
    print(f"downstream: {len(table)} rows in {cfg.sweep_dir}/downstream.parquet; section {cfg.sweep_dir}/downstream.md")


if __name__ == "__main__":
    main()
