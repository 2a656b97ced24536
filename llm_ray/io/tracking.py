"""Weights & Biases logging for one training run: world rank 0 only, never a secret.

`ray.air.integrations.wandb.setup_wandb(rank_zero_only=True)` was seen to create runs on every rank
under Ray Train V2, so the rank is checked here instead.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

SECRET_KEY_PATTERN = re.compile(r"(api[_-]?key|secret|token|password|credential|access[_-]?key)", re.I)


def scrub(obj: Any) -> Any:
    """Drop every mapping entry whose key looks like a secret (defence in depth: configs are
    built from dataclasses that hold no secrets, but user overrides can add keys)."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not SECRET_KEY_PATTERN.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def resolve_mode(mode: str) -> str:
    """`auto`: online with an API key in the environment, offline otherwise (no network try)."""
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def local_dir(directory: Optional[str]) -> str:
    """Where W&B writes its local files: `wandb.dir`, else this node's temp dir (the default when
    results live on remote storage, so no node-local path travels into them)."""
    import tempfile

    directory = directory or os.path.join(tempfile.gettempdir(), "llm-ray-wandb")
    os.makedirs(directory, exist_ok=True)
    return directory


def start_run(cfg, *, name: str, key: str, job_type: str, config: dict):
    """The one place a W&B run starts (trial runs and a sweep's fit run): None when disabled.

    `cfg` is a `WandbConfig`; the run's id is made from (group, key), so a resumed run continues its
    W&B run and two configs never share one; the config is scrubbed of anything that looks secret."""
    mode = resolve_mode(cfg.mode)
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        mode=mode, project=cfg.project, entity=cfg.entity, group=cfg.group, name=name,
        id=_run_id(cfg.group, key), job_type=job_type, dir=local_dir(cfg.dir), config=scrub(config),
        resume="allow", settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))


class RunLogger:
    """A training run's W&B run on world rank 0; a no-op elsewhere and when mode is disabled.
    `name` is what a person reads (`C3e13-N1.2M`); `key` is the run's content-keyed id."""

    def __init__(self, cfg, *, enabled: bool, name: str, key: str, job_type: str, config: dict):
        self.run = start_run(cfg, name=name, key=key, job_type=job_type, config=config) if enabled else None
        if self.run is None:
            return
        self.run.define_metric("step")
        for prefix in ("train/*", "val/*", "perf/*"):
            self.run.define_metric(prefix, step_metric="step")
        # The same losses against compute and data, so a sweep's runs of different sizes overlay
        # on one C or D axis directly.
        self.run.define_metric("tokens")
        self.run.define_metric("flops")
        self.run.define_metric("vs_flops/*", step_metric="flops")
        self.run.define_metric("vs_tokens/*", step_metric="tokens")

    def log(self, row: dict) -> None:
        if self.run is not None:
            losses = {k.split("/")[0] + "_loss": v for k, v in row.items() if k in ("train/loss", "val/loss")}
            self.run.log({**row, **{f"vs_flops/{k}": v for k, v in losses.items()},
                          **{f"vs_tokens/{k}": v for k, v in losses.items()}})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _run_id(group: Optional[str], name: str) -> str:
    """A stable id from the run's coordinates, so a resumed run continues the same W&B run."""
    import hashlib

    return hashlib.sha1(f"{group}/{name}".encode()).hexdigest()[:16]
