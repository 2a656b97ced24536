"""The model: exact parameter count, causal masking, GPT-2 initialisation."""

import math

import pytest
import torch

from llm_ray.core import flops
from llm_ray.core.config import ModelConfig
from llm_ray.training.model import Transformer


@pytest.mark.parametrize("tie,bias,d_ff", [(True, True, None), (False, True, None), (True, False, 96), (False, False, 200)])
def test_ledger_param_count_equals_sum_of_numel(tie, bias, d_ff):
    cfg = ModelConfig(n_layer=3, d_model=48, n_head=4, d_ff=d_ff, seq_len=32, vocab_size=300,
                      tie_embeddings=tie, bias=bias)
    model = Transformer(cfg)
    n = flops.param_count(cfg.shape())
    assert n.total == sum(p.numel() for p in model.parameters())
    emb = model.wte.weight.numel() + model.wpe.weight.numel() + (0 if tie else model.lm_head.weight.numel())
    assert n.non_embedding == n.total - emb


def test_gpt2_small_shape_builds_with_124m_parameters():
    cfg = ModelConfig(n_layer=12, d_model=768, n_head=12, seq_len=1024, vocab_size=50257)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_initial_loss_is_near_uniform_over_the_vocabulary():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=64, n_head=2, seq_len=32, vocab_size=500)
    x, y = torch.randint(0, 500, (2, 4, 32))
    _, loss = Transformer(cfg)(x, y)
    assert abs(loss.item() - math.log(500)) < 0.1


def test_attention_is_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layer=2, d_model=32, n_head=2, seq_len=16, vocab_size=100)).eval()
    x = torch.randint(0, 100, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 100
    a, _ = model(x)
    b, _ = model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_residual_projections_are_scaled_by_depth():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layer=8, d_model=256, n_head=4, seq_len=16, vocab_size=300))
    std_proj = model.blocks[0].mlp.proj.weight.std().item()
    std_fc = model.blocks[0].mlp.fc.weight.std().item()
    assert std_fc == pytest.approx(0.02, rel=0.05)
    assert std_proj == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=2, seq_len=16, vocab_size=100)
    model = Transformer(cfg)
    x = torch.randint(0, 100, (2, 16))
    model(x, x)[1].backward()
    g1 = model.blocks[0].attn.qkv.weight.grad.clone()
    model.zero_grad()
    model.checkpoint_activations = True
    model(x, x)[1].backward()
    assert torch.allclose(g1, model.blocks[0].attn.qkv.weight.grad, atol=1e-6)
