"""The stages, by name: what runs on a finished sweep and writes beside it, each with one signature.

    stage = get("compress")
    config = stage.check(CompressConfig(...))       # before anything trains: a bad setting fails at once
    stage.run(sweep_dir, config, wandb=..., resources=..., log=print)

Every stage reads the sweep through `llm_ray.io.sweepdir.SweepDir`, writes its files and its report
section beside the sweep's, and re-renders report.md. `config` is the stage's own typed config (the
Hydra group `group` holds it); `wandb` and `resources` default to the sweep's own (recorded in its
cells). Its command, `python -m llm_ray.<command>`, and `sweep.stages=[<name>]` both run it through
here: a name not registered is refused with the list of those that are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


def _no_check(config: Any) -> Any:
    return config


@dataclass(frozen=True)
class Stage:
    name: str
    group: str
    """The config group of its typed config (`compress`, `downstream`), or the command's field (`flops`)."""
    run: Callable[..., Any]
    """run(sweep_dir, config, *, wandb=None, resources=None, log=print) -> what it produced."""
    check: Callable[[Any], Any] = _no_check
    """check(config) -> config: everything checkable before the sweep trains; raises ValueError."""
    section: str = ""
    """Its report section in the sweep directory (inlined by report.md)."""
    in_sweep: bool = True
    """Whether `sweep.stages` may name it (held-out validation runs by sweep.validate_factor instead)."""


def _compress(sweep_dir: str, config, *, wandb=None, resources=None, log=print):
    from llm_ray.stages.compress import compress_sweep

    return compress_sweep(sweep_dir, config, wandb_cfg=wandb, resources=resources, log=log)


def _downstream(sweep_dir: str, config, *, wandb=None, resources=None, log=print):
    from llm_ray.stages.downstream import run_downstream

    return run_downstream(sweep_dir, config, resources, wandb, log=log)


def _check_downstream(config):
    """The task's records and splits load (a typo in downstream.* fails before the pre-training)."""
    from llm_ray.stages.downstream import load_splits

    load_splits(config)
    return config


def _validate(sweep_dir: str, flops: list, *, wandb=None, resources=None, log=print, sources=None):
    """Held-out validation at the budgets `flops` (the sweep's own W&B and resources settings);
    `sources`: the corpus URLs to read again when the records hold them masked (a credential)."""
    from llm_ray.stages.validate import run_validation, summary_line

    checks = run_validation(sweep_dir, [float(c) for c in flops], log=log, sources=sources)
    log(summary_line(checks) or "validation: no held-out run finished")
    log(f"validation: {sweep_dir}/validation.md (in report.md), validation.json, validation.png")
    return checks


STAGES = {s.name: s for s in (
    Stage("validate", group="flops", run=_validate, section="validation.md", in_sweep=False),
    Stage("downstream", group="downstream", run=_downstream, check=_check_downstream, section="downstream.md"),
    Stage("compress", group="compress", run=_compress, section="compress.md"),
)}


def get(name: str, *, in_sweep: bool = False) -> Stage:
    """The stage called `name` (`in_sweep`: one that `sweep.stages` may name), or a ValueError listing them."""
    known = [n for n, s in STAGES.items() if s.in_sweep or not in_sweep]
    if name not in known:
        where = "sweep.stages" if in_sweep else "stage"
        extra = " (held-out validation runs by sweep.validate_factor or sweep.validate_flops)" if in_sweep else ""
        raise ValueError(f"{where}: unknown stage {name!r}; the stages are {known}{extra}.")
    return STAGES[name]


def stage_config(stage: Stage, cfg) -> Optional[Any]:
    """The stage's typed config from a composed Hydra config (its group), for the commands and the sweep."""
    from omegaconf import OmegaConf

    value = cfg[stage.group]
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
