"""Bad input fails early, naming the field and the fix, before any Ray worker starts.

The bad configs run through `run_training` in a fresh Python process (where no Ray exists yet), which
reports each error and whether Ray had been started when it was raised.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import CONF, ROOT

BAD = [
    (["model.n_head=3"], "model.n_head=3 does not divide model.d_model"),
    (["trainer.tokens=4096"], "shorter than one global batch"),
    (["deepspeed.zero_stage=4"], "deepspeed.zero_stage=4 is out of range"),
    (["deepspeed.precision=fp16"], "use deepspeed.precision=bf16"),
    (["trainer.storage_path=runs/here"], "trainer.storage_path='runs/here' is relative"),
    (["data.sources=[]"], "data.sources is empty"),
    (["data.sources=[/nonexistent/corpus/*.txt]"], "data.sources"),
    (["data.vocab_size=70000", "data.token_dtype=uint16"], "does not fit data.token_dtype=uint16"),
    (["data.invalid_utf8=ignore"], "data.invalid_utf8='ignore': use error or replace"),
    (["data.delimiter='(a)b'"], "has a capturing group: write (?:...) instead"),
    (["data.delimiter='a*'"], "matches the empty string"),
    (["data.shard_tokens=0"], "data.shard_tokens=0 must be positive"),
    (["trainer.num_workers=64"], "trainer.num_workers=64"),
    (["trainer.global_batch_tokens=1000"], "not a multiple of model.seq_len"),
    (["trainer.warmup_steps=1000"], "trainer.warmup_steps=1000"),
    (["deepspeed=offload", "deepspeed.zero_stage=0"], "offload_optimizer=true needs ZeRO"),
    (["trainer.fail_at_step=5", "trainer.checkpoint_every=10"], "trainer.fail_at_step=5"),
    (["wandb.mode=loud"], "wandb.mode='loud'"),
    # (A val split shorter than trainer.eval_tokens is evaluated whole, with a warning: tests/test_data.py.)
    (["model=tiny", "model._target_=no_such_package.Model"], "model._target_"),
]

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import ray
    from conftest import compose_train
    from llm_ray.training.launch import run_training
    out = []
    for overrides in json.loads(sys.argv[1]):
        try:
            run_training(compose_train("trainer.storage_path={storage}", *overrides))
            out.append({{"error": None, "ray_started": ray.is_initialized()}})
        except ValueError as err:
            out.append({{"error": str(err), "ray_started": ray.is_initialized()}})
    print("RESULTS" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    script = SCRIPT.format(tests=os.path.dirname(__file__), storage=storage)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps([b[0] for b in BAD])],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULTS")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[0][len("RESULTS"):])


@pytest.mark.parametrize("i", range(len(BAD)), ids=[b[1][:40] for b in BAD])
def test_bad_config_is_rejected_before_ray_starts_with_field_and_fix(outcomes, i):
    overrides, message = BAD[i]
    assert outcomes[i]["error"] is not None, f"{overrides} was accepted"
    assert message in outcomes[i]["error"]
    assert outcomes[i]["ray_started"] is False


def test_unknown_key_in_a_plain_dict_config_names_it():
    from llm_ray.cli import job_from_dict

    with pytest.raises(ValueError, match="n_layers"):
        job_from_dict({"model": {"n_layers": 3}})


def test_misspelt_hydra_override_is_refused_at_composition():
    from hydra.errors import ConfigCompositionException

    from conftest import compose_train

    with pytest.raises(ConfigCompositionException, match="trainer.nam"):
        compose_train("trainer.nam=3")


def test_ray_address_names_the_cluster_to_join_and_resources_address_wins(monkeypatch):
    """Ray's convention: a driver joins the cluster RAY_ADDRESS names (`ray job submit` sets it);
    `resources.address` overrides it, and `local` starts a local cluster even so. A cluster's CPUs
    are the cluster's to count, so the local core count no longer limits the workers."""
    from llm_ray.core.config import ResourcesConfig, validate_train_job

    from conftest import compose_train

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ResourcesConfig().cluster_address() is None
    assert ResourcesConfig(address="auto").cluster_address() == "auto"
    big = compose_train("trainer.num_workers=64", "trainer.global_batch_tokens=131072", "trainer.tokens=1e8")
    with pytest.raises(ValueError, match="trainer.num_workers=64"):
        validate_train_job(big)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert ResourcesConfig().cluster_address() == "10.0.0.7:6379"
    assert ResourcesConfig(address="ray://head:10001").cluster_address() == "ray://head:10001"
    assert ResourcesConfig(address="local").cluster_address() is None
    validate_train_job(big)
