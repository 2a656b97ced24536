"""Model families: llm-ray's GPT-2 block, the Llama-style block (RMSNorm, SwiGLU, RoPE, no biases,
optional QK-norm) and a user's own module by `model._target_`; the exact FLOPs ledger of each checked
against sum(numel) and against torch's FLOP counter (torch.utils.flop_counter.FlopCounterMode)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llm_ray.core import flops as ledger
from llm_ray.core.config import ModelConfig
from llm_ray.training.model import build_model, check_ledger

SHAPE = dict(n_layer=2, d_model=64, n_head=4, seq_len=32, vocab_size=300)
VARIANTS = [
    dict(family="gpt2"), dict(family="gpt2", tie_embeddings=False, bias=False, d_ff=100),
    dict(family="llama"), dict(family="llama", qk_norm=True), dict(family="llama", tie_embeddings=False, d_ff=96),
    dict(_target_="user_model.ReluSquaredGPT"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_ledger_counts_every_parameter_of_every_family(variant):
    cfg = ModelConfig(**SHAPE, **variant)
    model = build_model(cfg)
    assert ledger.param_count(cfg.shape()).total == sum(p.numel() for p in model.parameters())
    assert check_ledger(cfg) == sum(p.numel() for p in model.parameters())  # the same on the meta device


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_torch_flop_counter_matches_the_exact_ledger_of_every_family(variant):
    """FlopCounterMode counts matmuls (forward and backward; attention through the math kernel):
    exactly the ledger's 3 x forward, less the softmax, which Chinchilla's Appendix F counts and
    no matmul does."""
    cfg = ModelConfig(**SHAPE, **variant)
    s, B = cfg.shape(), 2
    model = build_model(cfg)
    idx = torch.randint(0, s.vocab_size, (B, s.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, idx)
        loss.backward()
    softmax = 3 * (3 * s.n_head * s.seq_len ** 2 * s.n_layer)  # forward + backward, per sequence
    assert counter.get_total_flops() == B * (s.seq_len * ledger.flops_per_token(s).exact - softmax)


def test_llama_block_has_no_biases_rms_norms_swiglu_and_no_position_table():
    model = build_model(ModelConfig(**SHAPE, family="llama", qk_norm=True))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("bias") for n in names) and not any("wpe" in n for n in names)
    block = model.blocks[0]
    assert isinstance(block.attn_norm, torch.nn.RMSNorm) and isinstance(block.attn.q_norm, torch.nn.RMSNorm)
    assert block.mlp.w1.weight.shape == block.mlp.w3.weight.shape == (ledger.default_d_ff("llama", 64), 64)
    assert ledger.default_d_ff("llama", 64) == 176 and ledger.default_d_ff("llama", 96) == 256  # ~8/3 d
    assert model.lm_head.weight is model.wte.weight  # tied


def test_llama_attention_is_causal_and_rope_depends_only_on_relative_position():
    from llm_ray.training.llama import apply_rope, rope_tables

    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE, family="llama")).eval()
    idx = torch.randint(0, 300, (1, 32))
    other = idx.clone()
    other[0, 20:] = (other[0, 20:] + 1) % 300
    with torch.no_grad():
        assert torch.allclose(model(idx)[0][0, :20], model(other)[0][0, :20], atol=1e-5)
    cos, sin = rope_tables(64, 16, 10000.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        return (apply_rope(q, cos[i:i + 1], sin[i:i + 1]) * apply_rope(k, cos[j:j + 1], sin[j:j + 1])).sum()

    assert torch.allclose(score(5, 2), score(40, 37), atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 4), atol=1e-3)


def test_model_llama_composes_and_the_planner_sizes_its_cells_by_its_ledger():
    from llm_ray.cli import compose_sweep, compose_train
    from llm_ray.sweeps.runner import plan_sweep

    job = compose_train("model=llama")
    assert (job.model.family, job.model.bias, job.model.ff_dim) == ("llama", False, 344)
    base, sweep, _ = compose_sweep("sweep=smoke", "model.family=llama", "trainer.storage_path=/tmp/llm-ray-plan")
    _, cells, _ = plan_sweep(base, sweep)
    assert cells
    for planned in cells:
        assert planned.job.model.family == "llama"
        assert check_ledger(planned.job.model) == planned.cell.params  # the planner's N is the built model's


def test_a_user_model_that_the_ledger_does_not_count_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"user_model.ExtraGate has 12.* parameters but the gpt2 ledger"):
        check_ledger(ModelConfig(**SHAPE, _target_="user_model.ExtraGate"))
    with pytest.raises(ValueError, match="model._target_='no_such.Model' cannot be imported"):
        check_ledger(ModelConfig(**SHAPE, _target_="no_such.Model"))


def test_bad_family_settings_name_the_field():
    with pytest.raises(ValueError, match="model.family='llma'"):
        ModelConfig(family="llma")
    with pytest.raises(ValueError, match="model.qk_norm=true needs model.family=llama"):
        ModelConfig(qk_norm=True)
