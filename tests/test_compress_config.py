"""The compress command's config: the Hydra group composes in its own command and in the sweep's, and
every `python -m llm_ray.compress` line of the README is a valid invocation (fast: no Ray, no torch)."""

from __future__ import annotations

import glob
import os
import re
import shlex

import pytest
from omegaconf import OmegaConf

from conftest import CONF

ROOT = os.path.dirname(CONF)
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def readme_invocations() -> list[list[str]]:
    lines = [line.split("#")[0] for doc in DOCS for line in open(doc).read().splitlines()]
    return [shlex.split(line)[3:] for line in lines if re.match(r"\s*python -m llm_ray\.compress\b", line)]


@pytest.mark.parametrize("overrides", readme_invocations(), ids=lambda o: " ".join(o)[:60])
def test_every_readme_compress_command_composes_and_validates(overrides):
    from llm_ray.cli import compose
    from llm_ray.core.compression import CompressConfig, settings

    cfg = compose("compress", overrides)
    typed = OmegaConf.to_object(cfg.compress)
    assert isinstance(typed, CompressConfig) and settings(typed)[0].method == "fp32"
    assert cfg.sweep_dir.startswith("/")


def test_the_sweep_composes_the_compress_group_and_finds_the_stage():
    from llm_ray.cli import compose
    from llm_ray.sweep import sweep_stages

    cfg = compose("sweep", ["sweep.stages=[compress]", "compress.group_size=16"])
    ((stage, config),) = sweep_stages(cfg)
    assert stage.name == "compress" and config.group_size == 16 and callable(stage.run)
    with pytest.raises(ValueError, match=r"compress\.sparsities=\[1\.5\]"):
        sweep_stages(compose("sweep", ["sweep.stages=[compress]", "compress.sparsities=[1.5]"]))


@pytest.mark.parametrize("name", ["compress_plots", "validate", "registry", "fit"])
def test_the_sweep_refuses_a_name_that_is_no_stage_it_runs(name):
    from llm_ray.cli import compose
    from llm_ray.sweep import sweep_stages

    with pytest.raises(ValueError, match=rf"sweep.stages: unknown stage '{name}'; the stages are \['downstream', 'compress'\]"):
        sweep_stages(compose("sweep", [f"sweep.stages=[{name}]"]))
