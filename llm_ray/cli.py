"""What every command shares: Hydra's schemas registered once, typed configs from composed ones,
the compose API for tests, benchmarks and notebooks, and `command`, which makes a function of the
composed config a command whose bad input is one readable message, never a traceback.

    from llm_ray.cli import compose_train, compose_sweep
    job = compose_train("model=tiny", "trainer.tokens=2e6")          # what `python -m llm_ray.train ...` runs
    job, sweep, fit = compose_sweep("sweep=smoke")                    # ... and `python -m llm_ray.sweep ...`
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import typing
from dataclasses import fields, is_dataclass
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from llm_ray.core import config as job_config
from llm_ray.core.comparison import CompareConfig
from llm_ray.core.compression import CompressConfig
from llm_ray.core.config import COMPONENTS, TrainJobConfig
from llm_ray.core.plan import SweepConfig
from llm_ray.finetune.config import DownstreamConfig
from llm_ray.fitting.config import FitConfig

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")
"""The packaged Hydra configs (llm_ray/conf/, shipped as package data): found wherever the package is
installed. Add a directory of your own with `hydra.searchpath` (docs/models-and-data.md)."""
SCHEMAS = {"model": job_config.ModelConfig, "data": job_config.DataConfig,
           "deepspeed": job_config.DeepSpeedConfig, "trainer": job_config.TrainerConfig,
           "resources": job_config.ResourcesConfig, "wandb": job_config.WandbConfig,
           "sweep": SweepConfig, "fit": FitConfig, "downstream": DownstreamConfig,
           "compress": CompressConfig, "compare": CompareConfig}


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


def command(name: str, config_name: Optional[str] = None):
    """Make `body(cfg)` the command `python -m llm_ray.<name>`: Hydra's app on
    conf/<config_name or name>.yaml whose bad input is one readable message and exit code 2.

        @command("validate")
        def main(cfg: DictConfig) -> None:
            ...

        if __name__ == "__main__":
            main()

    The overrides are checked first (`check_overrides`: a misspelt key is answered with the real one,
    a value of the wrong type with its field); what is left (an unknown group option, the override
    syntax) Hydra reports compactly in its own words, without a traceback. Errors in the body go
    through `run_command`."""

    def decorate(body: Callable[[DictConfig], None]) -> Callable[[], None]:
        import hydra

        @functools.wraps(body)  # Hydra names the job (and its log file) after the command's module
        def task(cfg: DictConfig) -> None:
            run_command(name, lambda: body(cfg))

        app = hydra.main(version_base="1.3", config_path=CONF, config_name=config_name or name)(task)

        @functools.wraps(body)
        def main() -> None:
            register_configs()
            run_command(name, lambda: check_overrides(config_name or name, sys.argv[1:]))
            app()

        return main

    return decorate


def comma_list_as_list(argv: list, key: str) -> list:
    """Let `KEY=A,B` mean the list [A,B]: Hydra would read a bare comma as a multirun sweep."""
    return [f"{key}=[{a.split('=', 1)[1]}]" if a.startswith(f"{key}=") and "," in a
            and not a.split("=", 1)[1].startswith("[") else a for a in argv]


def run_command(name: str, body: Callable[[], None]) -> None:
    """Run a command's body: bad input (a ValueError: every config check and every check made
    before Ray starts; an OmegaConf error: a missing or unresolvable value) becomes one message on
    stderr, `llm_ray.<name>: error: ...`, and exit code 2. HYDRA_FULL_ERROR=1 raises it instead, so
    the traceback is there, as Hydra does with its own errors."""
    try:
        body()
    except (ValueError, OmegaConfBaseException) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"llm_ray.{name}: error: {explain(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:  # Ctrl-C: what finished is on disk, and a re-run resumes from it
        why = f" ({err})" if str(err) else ""
        print(f"llm_ray.{name}: interrupted{why}; everything finished is kept: run the same command "
              f"again to resume.", file=sys.stderr)
        sys.exit(130)


def explain(err: Exception) -> str:
    """The message of a bad-input error; an OmegaConf error as `key: what is wrong` on one line."""
    if not isinstance(err, OmegaConfBaseException) or not getattr(err, "full_key", None):
        return str(err)
    if isinstance(err, MissingMandatoryValue):
        return f"{err.full_key} is required: add {err.full_key}=... to the command."
    return f"{err.full_key}: {(err.msg or str(err)).strip().splitlines()[0]}"


def check_overrides(config_name: str, argv: list) -> None:
    """A ValueError for an override `key=value` whose key the config does not have, naming the
    nearest real one (`trainer.tokns=1`: did you mean trainer.tokens? Hydra's own message suggests
    `+trainer.tokns=1`, which a typed schema refuses too), or whose value the field's type refuses.
    Keys under the schemas' groups are checked against their dataclasses, top-level keys against
    conf/<config_name>.yaml; the rest (syntax, group options) is Hydra's to check and report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it in its own words
        return
    custom = any(a.split("=")[0] in ("-cn", "--config-name", "-cd", "--config-dir", "-cp", "--config-path")
                 for a in argv)
    for o in overrides:
        if o.type != OverrideType.CHANGE or o.package is not None or "/" in o.key_or_group:
            continue
        group, *path = o.key_or_group.split(".")
        if group in SCHEMAS and path:
            if _check_path(group, SCHEMAS[group], path) and not o.is_sweep_override():
                _check_value(group, path, o)
        elif not path and not custom:
            _check_key(group, top_level_keys(config_name), f"`python -m llm_ray.{config_name}`")


def top_level_keys(config_name: str) -> list:
    """The groups and keys at the top of conf/<config_name>.yaml (and Hydra's own node)."""
    cfg = OmegaConf.load(os.path.join(CONF, f"{config_name}.yaml"))
    groups = [str(k).split()[-1].split("@")[0] for entry in cfg.get("defaults", [])  # `override x@y`, `optional x`
              if isinstance(entry, DictConfig) for k in entry]
    return list(dict.fromkeys([*groups, *(k for k in cfg if k != "defaults"), "hydra"]))


def _check_path(group: str, schema: type, path: list) -> bool:
    """True when `path` ends on a field of the schema (False: it goes below into a list or dict)."""
    node, walked = schema, [group]
    for part in path:
        if not is_dataclass(node):
            return False  # a list, a dict or a value below: Hydra checks it
        names = [f.name for f in fields(node)]
        _check_key(part, names, f"{'.'.join(walked)} ({node.__name__})", prefix=".".join(walked) + ".")
        node = typing.get_type_hints(node)[part]
        walked.append(part)
    return True


def _check_value(group: str, path: list, override) -> None:
    """The value against the field's type, by OmegaConf's own conversion (as Hydra's merge does)."""
    from omegaconf.errors import ValidationError

    node = OmegaConf.structured(SCHEMAS[group])
    try:
        OmegaConf.update(node, ".".join(path), override.value(), merge=True)
    except ValidationError as err:
        raise ValueError(f"{override.input_line}: {(err.msg or str(err)).strip().splitlines()[0].rstrip('.')}.") from None


def _check_key(key: str, names: list, where: str, prefix: str = "") -> None:
    if key in names:
        return
    close = difflib.get_close_matches(key, names, n=1)
    fix = f"did you mean {prefix}{close[0]}?" if close else f"its keys are {', '.join(names)}."
    raise ValueError(f"{prefix}{key} is not a key of {where}: {fix}")


COMMANDS = ("train", "sweep", "fit", "report", "validate", "downstream", "compress", "prebuild")
"""The commands `llm-ray <command>` runs: each is `python -m llm_ray.<command>`."""


def main(argv: Optional[list] = None) -> None:
    """`llm-ray <command> [overrides]`: the installed entry point ([project.scripts]); the same as
    `python -m llm_ray.<command> [overrides]`, from any directory."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: llm-ray <command> [overrides]\n  commands: {', '.join(COMMANDS)}\n"
              f"  `llm-ray <command> --help` shows a command's config.", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    name, rest = argv[0], argv[1:]
    sys.argv = [f"llm-ray {name}", *rest]
    importlib.import_module(f"llm_ray.{name}").main()
