"""Every command answers bad input with one readable message and a non-zero exit, never a traceback
(unless HYDRA_FULL_ERROR=1 asks for it): each run here is `python -m llm_ray.<command>` in a
subprocess, as a user types it. Nothing here starts Ray."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import CONF, ROOT

# Every command made by llm_ray.cli.command: today's, and each stage's command as it is added.
COMMANDS = sorted(p.stem for p in pathlib.Path(ROOT, "llm_ray").glob("*.py") if "\n@command(" in p.read_text())


def run(module: str, *overrides: str, tmp_path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", f"llm_ray.{module}", *overrides, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_one_clean_message(proc: subprocess.CompletedProcess, *names: str) -> None:
    """Non-zero exit; stderr is a few lines naming what is wrong and the fix; no traceback, no
    Hydra "Error executing job" preamble."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert not any(ln.startswith("Traceback") for ln in proc.stdout.splitlines() + lines), proc.stderr
    assert "Error executing job" not in proc.stderr
    assert 1 <= len(lines) <= 3, proc.stderr
    for name in names:
        assert name in proc.stderr, proc.stderr


def test_the_commands_are_found():
    assert {"train", "sweep", "fit", "report"} <= set(COMMANDS)


@pytest.mark.parametrize("module", COMMANDS)
def test_an_unknown_key_is_one_message_and_a_non_zero_exit(module, tmp_path):
    assert_one_clean_message(run(module, "nosuchkey=1", tmp_path=tmp_path),
                             f"llm_ray.{module}: error: nosuchkey is not a key of `python -m llm_ray.{module}`")


@pytest.mark.parametrize("module", COMMANDS)
def test_hydra_full_error_keeps_the_traceback(module, tmp_path):
    proc = run(module, "nosuchkey=1", tmp_path=tmp_path, full_error=True)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "nosuchkey is not a key of" in proc.stderr


@pytest.mark.parametrize("module,overrides,names", [
    # A value of the wrong type (Hydra's composition would refuse it too).
    ("train", ["trainer.tokens=abc"], ["trainer.tokens=abc", "Float"]),
    # A misspelt key inside a group and inside a nested dataclass.
    ("sweep", ["sweep.budget=[1e12]"], ["did you mean sweep.budgets?"]),
    ("fit", ["results=x.csv", "fit.columns.parms=N"], ["did you mean fit.columns.params?"]),
    # A config dataclass's __post_init__.
    ("train", ["model.d_model=-1"], ["model.d_model=-1"]),
    ("fit", ["results=x.csv", "fit.n_bootstrap=-3"], ["fit.n_bootstrap"]),
    # A rule checked later, before Ray starts (validate_train_job).
    ("train", ["trainer.tokens=1e3"], ["trainer.tokens=1000", "train for more tokens"]),
    # A required value left out, and one that names nothing.
    ("report", [], ["sweep_dir is required", "sweep_dir=..."]),
    ("report", ["sweep_dir=/nonexistent/sweep"], ["sweep_dir=", "results.parquet"]),
])
def test_bad_input_is_one_message_naming_the_field_and_the_fix(module, overrides, names, tmp_path):
    assert_one_clean_message(run(module, *overrides, tmp_path=tmp_path), f"llm_ray.{module}: error:", *names)


def test_override_checks_name_the_real_key_and_leave_the_rest_to_hydra():
    from llm_ray.cli import check_overrides

    check_overrides("sweep", ["sweep=smoke", "sweep.budgets=[1e12]", "model.vocab_size=${data.vocab_size}",
                              "hydra.run.dir=/tmp/x", "+extra=1", "-m", "trainer.lr=1e-3,3e-3",
                              "fit.columns.params=Model Size"])
    with pytest.raises(ValueError, match=r"sweep\.budget is not a key of sweep \(SweepConfig\): did you mean sweep\.budgets\?"):
        check_overrides("sweep", ["sweep.budget=[1e12]"])
    with pytest.raises(ValueError, match=r"^results_path is not a key of `python -m llm_ray.fit`: did you mean results\?"):
        check_overrides("fit", ["results_path=x.csv"])
    with pytest.raises(ValueError, match=r"trainer.num_workers=two: Value 'two' of type 'str' could not be converted to Integer\.$"):
        check_overrides("train", ["trainer.num_workers=two"])
    with pytest.raises(ValueError, match=r"its keys are"):
        check_overrides("train", ["wandb.zzzzzz=1"])
