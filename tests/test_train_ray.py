"""The spine for real: Ray Train + DeepSpeed ZeRO on CPU (gloo), on real text."""

from __future__ import annotations

import glob
import os

import pytest

from conftest import FAKE_SECRETS, TEST_DATA, compose_train, grep_tree

pytestmark = pytest.mark.ray

# 2 workers x 16 sequences x 64 tokens, 2 micro-batches: 4096 tokens per step.
SMALL_RUN = ["model=tiny", *TEST_DATA, "trainer.num_workers=2", "trainer.global_batch_tokens=4096",
             "trainer.micro_batch_size=16", "trainer.warmup_steps=4", "trainer.lr=5e-3",
             "trainer.eval_tokens=16384", "trainer.log_every=1"]


def train(tmp_path, name, *overrides):
    from llm_ray.launch import run_training

    job = compose_train(*SMALL_RUN, f"trainer.storage_path={tmp_path}", f"trainer.name={name}",
                        *overrides)
    return run_training(job)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_each_zero_stage_trains_two_workers_and_val_loss_falls(ray_cluster, tmp_path, stage):
    rec = train(tmp_path, f"zero{stage}", f"deepspeed=zero{stage}", "trainer.tokens=163840",
                "trainer.eval_every=20", "trainer.checkpoint_every=0", "wandb.mode=disabled")
    assert rec["status"] == "ok" and rec["world_size"] == 2 and rec["steps"] == 40
    evals = [r["val_loss"] for r in rec["history"] if "val_loss" in r]
    assert evals[0] > 6.5  # ~ln(1024) = 6.93 at initialisation
    assert evals[-1] < evals[0] - 0.8, evals  # > 0.8 nats learned in 40 steps
    if stage == 3:
        # ZeRO-3 shards the parameters: each rank holds about half of them.
        assert rec["local_param_fraction"] == pytest.approx(0.5, abs=0.02)
    else:
        assert rec["local_param_fraction"] == 1.0


def test_worker_crash_resumes_from_checkpoint_with_identical_losses(ray_cluster, tmp_path):
    common = ["deepspeed=zero2", "trainer.tokens=98304", "trainer.eval_every=8",
              "trainer.checkpoint_every=6", "wandb.mode=disabled"]
    clean = train(tmp_path, "clean", *common)
    crashed = train(tmp_path, "crashed", *common, "trainer.fail_at_step=15", "trainer.max_failures=1")
    assert crashed["status"] == "ok" and crashed["resumed_from_step"] in (6, 12)
    resumed = crashed["resumed_from_step"]
    a = {r["step"]: r for r in clean["history"]}
    b = {r["step"]: r for r in crashed["history"]}
    assert sorted(a) == sorted(b)  # the resumed history holds every step exactly once
    after = [s for s in a if s > resumed]
    assert len(after) >= 10
    for s in after:
        assert b[s]["train_loss"] == pytest.approx(a[s]["train_loss"], abs=1e-6), s
    assert crashed["final_val_loss"] == pytest.approx(clean["final_val_loss"], abs=1e-6)


def test_wandb_offline_logs_one_run_from_rank_zero_without_secrets(ray_cluster, tmp_path):
    rec = train(tmp_path, "wandb", "deepspeed=zero1", "trainer.tokens=40960", "trainer.eval_every=5",
                "trainer.checkpoint_every=5", "wandb.mode=offline")
    assert rec["status"] == "ok"
    runs = glob.glob(os.path.join(tmp_path, "wandb", "wandb", "offline-run-*"))
    assert len(runs) == 1, runs  # rank 0 only
    assert glob.glob(os.path.join(runs[0], "*.wandb"))
    assert grep_tree(str(tmp_path), FAKE_SECRETS.values()) == []
