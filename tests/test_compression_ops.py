"""The compression operations on the real model (torch, CPU, a second or two): quantize-dequantize
error as the bit width predicts, pruning to exactly the requested sparsity, the tied head kept tied,
and the bytes ledger equal to what the operations really produce."""

from __future__ import annotations

import math

import pytest
import torch

from llm_ray.compression import compress_, quantize_dequantize, target_parameters
from llm_ray.core.compression import Setting, model_bytes, targets
from llm_ray.core.config import ModelConfig
from llm_ray.training.model import Transformer

CFG = ModelConfig(n_layer=2, d_model=32, n_head=4, seq_len=16, vocab_size=96)


def model(seed: int = 0, cfg: ModelConfig = CFG) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("bits, group", [(8, None), (4, 8), (3, 16), (2, 32), (5, None)])
def test_quantize_dequantize_error_is_within_half_a_step_of_its_group(bits, group):
    torch.manual_seed(bits)
    w = torch.randn(64, 128) * torch.rand(64, 1) * 3  # rows of different scales
    w_hat, scale = quantize_dequantize(w, bits, group)
    g = group or 128
    assert scale.shape == (64, 128 // g)
    q_max = 2 ** (bits - 1) - 1
    absmax = w.reshape(64, -1, g).abs().amax(-1)
    # The stored fp16 scale is the exact one rounded up by less than one fp16 ulp (2^-10 relative).
    assert (scale >= absmax / q_max).all() and (scale <= absmax / q_max * (1 + 2 ** -10)).all()
    err = (w - w_hat).abs().reshape(64, -1, g)
    assert (err <= scale[..., None] / 2 * (1 + 1e-6)).all()
    # w_hat is exactly an integer code in [-q_max, q_max] times its group's scale.
    codes = w_hat.reshape(64, -1, g) / scale[..., None]
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= q_max + 1e-4


def test_one_more_bit_halves_the_quantization_error():
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    rms = {b: (w - quantize_dequantize(w, b, 32)[0]).pow(2).mean().sqrt().item() for b in (3, 4, 5, 6, 7, 8)}
    for b in (4, 5, 6, 7, 8):
        # The step is absmax / q_max, q_max = 2^(b-1) - 1: one more bit divides it by ~2 (3 -> 4 bits: 7/3).
        assert rms[b - 1] / rms[b] == pytest.approx((2 ** (b - 1) - 1) / (2 ** (b - 2) - 1), rel=0.15), b
    # Uniform rounding noise: RMS = step / sqrt(12), with step = absmax / q_max.
    step = w.reshape(256, -1, 32).abs().amax(-1).mean().item() / 127
    assert rms[8] == pytest.approx(step / math.sqrt(12), rel=0.1)


def test_group_size_must_divide_the_width():
    with pytest.raises(ValueError, match="does not divide the width 30"):
        quantize_dequantize(torch.randn(4, 30), 4, 8)


def test_targets_are_the_ledgers_and_the_tied_head_stays_tied_and_compressed():
    m = model()
    for embedding in (True, False):
        assert [n for n, _, _ in target_parameters(m, embedding)] == [t.name for t in targets(CFG.shape(), embedding)]
    for setting in (Setting("rtn_group", bits=4, group_size=8), Setting("prune_global", sparsity=0.5),
                    Setting("prune_2_4", sparsity=0.5)):
        m = model()
        compress_(m, setting)
        assert m.lm_head.weight is m.wte.weight
        assert len(torch.unique(m.wte.weight[:, :8].abs() / m.wte.weight[:, :8].abs().amax(1, keepdim=True))) < 40 \
            if setting.method == "rtn_group" else (m.wte.weight == 0).any()
    m = model()
    before = m.wte.weight.clone()
    compress_(m, Setting("rtn_channel", bits=8, embedding=False))
    assert torch.equal(m.wte.weight, before) and m.lm_head.weight is m.wte.weight


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75, 0.9])
def test_pruning_reaches_the_requested_sparsity_exactly(sparsity):
    m = model()
    info = compress_(m, Setting("prune_layer", sparsity=sparsity))
    for name, module, attr in target_parameters(m, True):
        w = getattr(module, attr)
        assert int((w == 0).sum()) == round(sparsity * w.numel()), name
    m = model()
    info = compress_(m, Setting("prune_global", sparsity=sparsity))
    assert info["zeros"] == round(sparsity * info["target_weights"])
    assert info["target_weights"] == sum(t.numel for t in targets(CFG.shape(), True))
    # Global pruning removes the smallest magnitudes over all targets: every survivor outweighs every pruned one.
    ref = model()
    kept, cut = [], []
    for (_, mod, a), (_, ref_mod, _) in zip(target_parameters(m, True), target_parameters(ref, True)):
        w, w0 = getattr(mod, a), getattr(ref_mod, a)
        kept.append(w0[w != 0].abs())
        cut.append(w0[w == 0].abs())
    assert torch.cat(cut).max() <= torch.cat(kept).min()


def test_two_four_pruning_keeps_the_two_largest_of_every_four():
    m, ref = model(), model()
    compress_(m, Setting("prune_2_4", sparsity=0.5))
    for (_, mod, a), (_, ref_mod, _) in zip(target_parameters(m, True), target_parameters(ref, True)):
        w, w0 = getattr(mod, a).reshape(-1, 4), getattr(ref_mod, a).reshape(-1, 4)
        assert ((w != 0).sum(1) == 2).all()
        kept = torch.where(w != 0, w0.abs(), torch.inf).amin(1)
        cut = torch.where(w == 0, w0.abs(), -torch.inf).amax(1)
        assert (cut <= kept).all()


@pytest.mark.parametrize("setting", [Setting("fp32"), Setting("rtn_channel", bits=8), Setting("rtn_group", bits=3, group_size=16),
                                     Setting("rtn_group", bits=4, group_size=8, embedding=False),
                                     Setting("prune_global", sparsity=0.37), Setting("prune_layer", sparsity=0.6),
                                     Setting("prune_2_4", sparsity=0.5)])
def test_bytes_ledger_equals_what_the_compressed_model_stores(setting):
    cfg = ModelConfig(n_layer=2, d_model=48, n_head=4, seq_len=20, vocab_size=131, tie_embeddings=False)
    m = model(1, cfg)
    names = {n for n, _, _ in target_parameters(m, setting.embedding)} if setting.method != "fp32" else set()
    stored = 0
    for name, p in m.named_parameters():
        if name not in names:
            stored += 4 * p.numel()
        elif setting.bits < 32:
            scale = quantize_dequantize(p, setting.bits, setting.group_size)[1]
            stored += math.ceil(p.numel() * setting.bits / 8) + 2 * scale.numel()
    if setting.sparsity:
        compress_(m, setting)
        for name, p in m.named_parameters():
            if name in names:
                stored += 4 * int((p != 0).sum()) + math.ceil(p.numel() / 8)
    assert model_bytes(cfg.shape(), setting) == stored


def test_the_memory_answer_calls_int8_of_the_best_fp32_model_a_tie_not_a_win():
    """At a budget that holds the best fp32 model, its int8 copy is "best" by 1e-5 nats: the report
    says tie (compression only saves bytes there), and counts a real win only where a bigger model,
    compressed, beats every fp32 model that fits by more than TIE_NATS."""
    import pandas as pd

    from llm_ray.reporting.compress import answer_summary, memory_answer

    rows = [  # (params, method, bits, bytes, val_loss)
        (1000, "fp32", 32, 4000, 4.0), (1000, "rtn_channel", 8, 1100, 4.00001),
        (4000, "fp32", 32, 16000, 3.5), (4000, "rtn_channel", 8, 4200, 3.49999),
    ]
    table = pd.DataFrame([{"params": n, "budget": 1e11, "tokens": 1e6, "method": m, "bits": b, "bytes": by,
                           "val_loss": v, "label": f"{m}-{b}"} for n, m, b, by, v in rows])
    text = answer_summary(memory_answer(table, [5000, 20000]))
    # 5 kB: int8 of the 4k model (3.49999) beats the fp32 1k model (4.0); 20 kB: int8 4k ties fp32 4k.
    assert text.startswith("A compressed model is best at 1 of 2 budgets"), text
    assert "at 1 it beats the best fp32 model that fits by 0.500-0.500" in text
    assert "at 1 it ties" in text
