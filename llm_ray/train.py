"""`python -m llm_ray.train [overrides]`: one training run on Ray Train + DeepSpeed.

    python -m llm_ray.train model=tiny deepspeed=zero3 trainer.num_workers=2 trainer.tokens=2e6

The config is validated before Ray starts; the run's record (result.json) and per-step metrics
(metrics.json) land in `<trainer.storage_path>/<trainer.name>/` beside Ray's checkpoints.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from llm_ray.cli import command, job_from_hydra


@command("train")
def main(cfg: DictConfig) -> None:
    from llm_ray.io import storage
    from llm_ray.training.launch import run_training

    job = job_from_hydra(cfg)
    record = run_training(job)
    summary = {k: getattr(record, k) for k in ("status", "params", "tokens", "flops_exact", "final_train_loss",
                                                "final_val_loss", "final_val_bpb", "tokens_per_s", "mfu", "wall_s")}
    print(json.dumps(summary, indent=2))
    run_dir = storage.join(job.trainer.storage_path or storage.to_local_or_url("runs"), job.trainer.name)
    print(f"results: {run_dir}/result.json (checkpoints beside it)")


if __name__ == "__main__":
    main()
