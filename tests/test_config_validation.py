"""Bad input fails early, naming the field and the fix, before any Ray worker starts."""

import os

import pytest
from hydra import compose, initialize_config_dir

from llm_ray.train import job_from_hydra

CONF = os.path.join(os.path.dirname(__file__), "..", "conf")


def job(*overrides):
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        return job_from_hydra(compose("train", overrides=list(overrides)))


BAD = [
    (["model.n_head=3"], "model.n_head=3 does not divide model.d_model"),
    (["trainer.tokens=4096"], "shorter than one global batch"),
    (["deepspeed.zero_stage=4"], "deepspeed.zero_stage=4 is out of range"),
    (["deepspeed.precision=fp16"], "use deepspeed.precision=bf16"),
    (["trainer.storage_path=runs/here"], "trainer.storage_path='runs/here' is relative"),
    (["data.sources=[]"], "data.sources is empty"),
    (["data.vocab_size=70000", "data.token_dtype=uint16"], "does not fit data.token_dtype=uint16"),
    (["trainer.num_workers=64"], "trainer.num_workers=64"),
    (["trainer.global_batch_tokens=1000"], "not a multiple of model.seq_len"),
    (["trainer.warmup_steps=1000"], "trainer.warmup_steps=1000"),
    (["deepspeed=offload", "deepspeed.zero_stage=0"], "offload_optimizer=true needs ZeRO"),
    (["trainer.fail_at_step=5", "trainer.checkpoint_every=10"], "trainer.fail_at_step=5"),
    (["wandb.mode=loud"], "wandb.mode='loud'"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_config_is_rejected_before_ray_starts_with_field_and_fix(overrides, message):
    import ray

    from llm_ray.launch import run_training

    with pytest.raises(ValueError) as err:
        run_training(job(*overrides))
    assert message in str(err.value)
    assert not ray.is_initialized()


def test_seq_len_longer_than_the_validation_text_is_rejected_before_ray_starts(tmp_path):
    import ray

    from llm_ray.launch import run_training

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"doc{i}.txt").write_text(f"document {i} says hello to the world. " * 30)
    bad = job("model=tiny", f"data.sources=[{corpus}/*.txt]", "data.vocab_size=300",
              f"data.cache_dir={tmp_path}/cache", f"trainer.storage_path={tmp_path}/runs",
              "trainer.eval_tokens=10000000")
    with pytest.raises(ValueError, match="trainer.eval_tokens"):
        run_training(bad)
    assert not ray.is_initialized()


def test_unknown_key_in_a_plain_dict_config_names_it():
    from llm_ray.config import job_from_dict

    with pytest.raises(ValueError, match="n_layers"):
        job_from_dict({"model": {"n_layers": 3}})
