"""The places llm-ray reaches into Ray's and DeepSpeed's private modules (checked against Ray 2.60.0
and DeepSpeed 0.19.8) still exist: if one moves, this fails loudly here instead of the patch silently
doing nothing."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys


def test_ray_train_report_loggers_are_where_the_training_loop_quiets_them():
    from llm_ray.training.loop import _quiet_ray_train_reports

    for name in ("context", "storage", "train_fn_utils"):
        module = importlib.import_module(f"ray.train.v2._internal.execution.{name}")
        assert module.__file__
    _quiet_ray_train_reports()
    from ray.train.v2._internal.execution import train_fn_utils

    assert logging.getLogger(train_fn_utils.__name__).level == logging.WARNING


def test_placement_group_cleaner_logger_names_a_real_module():
    from llm_ray.training.worker_setup import PLACEMENT_GROUP_CLEANER_LOGGER as name

    assert importlib.import_module(name).__name__ == name  # the logger quiet_local_workers silences


def test_the_worker_setup_hook_imports_nothing_heavy():
    """Ray runs the hook in every worker process it starts: importing it must not pull in pandas, scipy,
    torch or the rest of llm-ray (it once cost each worker ~1.4 s of CPU)."""
    code = ("import sys; import llm_ray.training.worker_setup as w; w.quiet_local_workers(); "
            "print(sorted(m for m in ('pandas', 'scipy', 'torch', 'deepspeed', 'llm_ray.io', 'llm_ray.core') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_tune_still_propagates_aws_credentials_through_the_set_llm_ray_edits():
    code = """
from ray.tune.execution import class_cache
from llm_ray.sweeps.runner import CLOUD_SECRETS, keep_cloud_secrets_out_of_trial_runtime_env
assert isinstance(class_cache.ENV_VARS_TO_PROPAGATE, set)
assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= class_cache.ENV_VARS_TO_PROPAGATE
keep_cloud_secrets_out_of_trial_runtime_env()
assert not set(CLOUD_SECRETS) & class_cache.ENV_VARS_TO_PROPAGATE
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_token_auth_warning_comes_from_the_logger_a_local_start_quiets():
    from ray._private.authentication import authentication_token_setup as setup

    from llm_ray.training.launch import RAY_AUTH_LOGGER

    assert setup.__name__ == RAY_AUTH_LOGGER
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    logger.addHandler(handler)
    try:
        setup._warn_token_auth_enabled()
    finally:
        logger.removeHandler(handler)
    assert [r.levelno for r in seen] == [logging.WARNING]
    assert "Token authentication is enabled" in seen[0].getMessage()


def test_deepspeed_process_group_caches_are_where_a_reused_trial_process_clears_them():
    """engine.forget_earlier_process_group resets these by name before each run adopts Ray's new group."""
    import deepspeed.comm.comm as ds_comm
    from deepspeed.utils import groups

    from llm_ray.training.engine import DEEPSPEED_GROUP_CACHES, forget_earlier_process_group

    assert hasattr(ds_comm, "cdb")
    assert [name for name in DEEPSPEED_GROUP_CACHES if not hasattr(groups, name)] == []
    groups._WORLD_GROUP, groups._EXPERT_PARALLEL_GROUP = object(), {"ep_size_1": object()}
    forget_earlier_process_group()
    assert groups._WORLD_GROUP is None and groups._EXPERT_PARALLEL_GROUP == {} and ds_comm.cdb is None
