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


class RunLogger:
    """A W&B run on world rank 0; a no-op elsewhere and when mode is disabled."""

    def __init__(self, *, enabled: bool, mode: str, project: str, entity: Optional[str],
                 group: Optional[str], name: str, job_type: str, directory: str, config: dict,
                 step_metrics: tuple[str, ...] = ("tokens", "flops")):
        self.run = None
        mode = resolve_mode(mode)
        if not enabled or mode == "disabled":
            return
        import wandb

        os.makedirs(directory, exist_ok=True)
        self.run = wandb.init(
            mode=mode, project=project, entity=entity, group=group, name=name, id=_run_id(group, name),
            job_type=job_type, dir=directory, config=scrub(config), resume="allow",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))
        # Loss against tokens and FLOPs as well as steps, so W&B can overlay runs of different
        # sizes on a compute axis directly.
        self.run.define_metric("step")
        for m in step_metrics:
            self.run.define_metric(m)
        for prefix in ("train/*", "val/*", "perf/*"):
            self.run.define_metric(prefix, step_metric="step")

    def log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log(row)

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
