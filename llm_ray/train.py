"""`python -m llm_ray.train [overrides]`: one training run on Ray Train + DeepSpeed.

    python -m llm_ray.train model=tiny deepspeed=zero3 trainer.num_workers=2 trainer.tokens=2e6

The config is validated before Ray starts; the run's result record (result.json) and per-step
metrics (metrics.json) land in `<trainer.storage_path>/<trainer.name>/` beside Ray's checkpoints.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from llm_ray.config import job_from_dict, register_configs

register_configs()


def job_from_hydra(cfg: DictConfig):
    """Typed job config from a composed Hydra config (plain dicts; resolved interpolations)."""
    d = OmegaConf.to_container(cfg, resolve=True)
    return job_from_dict({k: d[k] for k in ("model", "data", "deepspeed", "trainer", "resources", "wandb")})


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from llm_ray.launch import run_training

    record = run_training(job_from_hydra(cfg))
    summary = {k: record[k] for k in ("status", "params", "tokens", "flops_exact", "final_train_loss",
                                      "final_val_loss", "tokens_per_s", "mfu", "wall_s")}
    print(json.dumps(summary, indent=2))
    print(f"results: {record['run_dir']}/result.json (checkpoints beside it)")


if __name__ == "__main__":
    main()
