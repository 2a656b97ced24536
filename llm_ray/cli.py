"""What every command shares: Hydra's schemas registered once, typed configs from composed ones,
and the compose API for tests, benchmarks and notebooks.

    from llm_ray.cli import compose_train, compose_sweep
    job = compose_train("model=tiny", "trainer.tokens=2e6")          # what `python -m llm_ray.train ...` runs
    job, sweep, fit = compose_sweep("sweep=smoke")                    # ... and `python -m llm_ray.sweep ...`
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from typing import Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llm_ray.core import config as job_config
from llm_ray.core.config import COMPONENTS, TrainJobConfig
from llm_ray.core.plan import SweepConfig
from llm_ray.fitting.config import FitConfig

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
SCHEMAS = {"model": job_config.ModelConfig, "data": job_config.DataConfig,
           "deepspeed": job_config.DeepSpeedConfig, "trainer": job_config.TrainerConfig,
           "resources": job_config.ResourcesConfig, "wandb": job_config.WandbConfig,
           "sweep": SweepConfig, "fit": FitConfig}


def register_configs() -> None:
    """Register every schema in Hydra's ConfigStore as `<group>/<group>_schema` (the group YAMLs
    extend them, so overrides are type-checked). Idempotent; called by each command and by compose."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=schema)


def job_from_hydra(cfg: DictConfig) -> TrainJobConfig:
    """The typed job of a composed config (OmegaConf builds each component's dataclass, which
    validates itself; interpolations such as model.vocab_size=${data.vocab_size} are resolved)."""
    return TrainJobConfig(**{name: OmegaConf.to_object(cfg[name]) for name in COMPONENTS})


def job_from_dict(d: dict) -> TrainJobConfig:
    """A typed job from a plain dict (e.g. a config file of your own), merged over the defaults by
    OmegaConf, which type-checks; an unknown key is a ValueError that names it."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainJobConfig), d)
    except OmegaConfBaseException as err:
        raise ValueError(f"{err.msg if hasattr(err, 'msg') else err}: check the key against "
                         f"llm_ray/core/config.py (fields: {_field_names()}).") from None
    return OmegaConf.to_object(merged)


def _field_names() -> str:
    return "; ".join(f"{c}: {', '.join(f.name for f in fields(type(getattr(TrainJobConfig(), c))))}"
                     for c in COMPONENTS)


def compose(config_name: str, overrides) -> DictConfig:
    """Hydra's compose API on conf/, as `python -m llm_ray.<config_name> <overrides>` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def compose_train(*overrides: str) -> TrainJobConfig:
    """The typed job that `python -m llm_ray.train <overrides>` would run."""
    return job_from_hydra(compose("train", overrides))


def compose_sweep(*overrides: str) -> tuple[TrainJobConfig, SweepConfig, FitConfig]:
    """(base job, sweep, fit) that `python -m llm_ray.sweep <overrides>` would run."""
    cfg = compose("sweep", overrides)
    return job_from_hydra(cfg), OmegaConf.to_object(cfg.sweep), OmegaConf.to_object(cfg.fit)


def run_command(name: str, body: Callable[[], None]) -> None:
    """Run a command's body: a ValueError (bad input) becomes one readable message on stderr and
    exit code 2."""
    try:
        body()
    except ValueError as err:
        print(f"llm_ray.{name}: error: {err}", file=sys.stderr)
        sys.exit(2)
