"""Compression's pure math, in milliseconds: settings and their validation, the bytes ledger, the memory
budgets, and the degradation laws recovered from synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from llm_ray.core.compression import (CompressConfig, Setting, best_under, budget_ladder, check_widths, model_bytes,
                                      settings, targets, tensors)
from llm_ray.core.flops import Shape, param_count
from llm_ray.fitting.degradation import fit_degradation

SHAPE = Shape(n_layer=2, d_model=16, n_head=2, d_ff=64, seq_len=32, vocab_size=100)


def test_the_tensor_list_counts_every_parameter_once():
    for shape in (SHAPE, Shape(3, 24, 3, 96, 64, 512, tie_embeddings=False, bias=False)):
        assert sum(t.numel for t in tensors(shape)) == param_count(shape).total


def test_bytes_ledger_by_hand_for_a_small_model():
    n = param_count(SHAPE).total
    assert model_bytes(SHAPE, Setting("fp32")) == 4 * n
    # Targets with the embedding: wte (100 x 16), wpe (32 x 16), per layer qkv 48x16, proj 16x16, fc 64x16, proj 16x64.
    linear = 2 * (48 * 16 + 16 * 16 + 64 * 16 + 16 * 64)
    emb = 100 * 16 + 32 * 16
    rows_by_width = {16: 2 * (48 + 16 + 64) + 100 + 32, 64: 2 * 16}  # rows of the target matrices, by width
    others = n - linear - emb
    int8 = linear + emb + 2 * sum(rows_by_width.values())  # one byte per weight, one fp16 scale per row
    assert model_bytes(SHAPE, Setting("rtn_channel", bits=8)) == 4 * others + int8
    groups = sum(rows * width // 8 for width, rows in rows_by_width.items())
    int3 = -(-(linear + emb) * 3 // 8) + 2 * groups
    assert model_bytes(SHAPE, Setting("rtn_group", bits=3, group_size=8)) == 4 * others + int3
    assert model_bytes(SHAPE, Setting("rtn_group", bits=4, group_size=8, embedding=False)) == (
        4 * (others + emb) + linear // 2 + 2 * (2 * (48 + 16 + 64) * 16 // 8 + 2 * 16 * 64 // 8))
    # Pruned: fp32 values kept plus a bit per target weight.
    per_tensor_kept = sum(t.numel - round(0.3 * t.numel) for t in targets(SHAPE, True))
    bitmask = sum(-(-t.numel // 8) for t in targets(SHAPE, True))
    assert model_bytes(SHAPE, Setting("prune_layer", sparsity=0.3)) == 4 * (others + per_tensor_kept) + bitmask
    total = linear + emb
    assert model_bytes(SHAPE, Setting("prune_global", sparsity=0.3)) == 4 * (others + total - round(0.3 * total)) + bitmask
    assert model_bytes(SHAPE, Setting("prune_2_4", sparsity=0.5)) == 4 * (others + total // 2) + bitmask


def test_settings_start_with_the_baseline_and_have_distinct_ids():
    got = settings(CompressConfig(group_bits=[4], sparsities=[0.5], embedding=False))
    assert [s.setting_id for s in got] == ["fp32", "rtn_channel-b8-noemb", "rtn_group-b4-g8-noemb",
                                           "prune_global-s0.5-noemb", "prune_layer-s0.5-noemb", "prune_2_4-noemb"]
    assert [s.label for s in got][:3] == ["fp32", "int8 per-channel (no emb)", "int4 g8 (no emb)"]


@pytest.mark.parametrize("field, value, words", [
    ("methods", ["rtn_channel", "gptq"], "unknown method(s) ['gptq']"),
    ("channel_bits", [8, 16], "{2..8}"),
    ("group_bits", [1], "{2..8}"),
    ("sparsities", [0.5, 1.0], "(0, 1)"),
    ("sparsities", [0.0], "(0, 1)"),
    ("group_size", 0, "positive"),
])
def test_bad_compress_config_names_the_field(field, value, words):
    with pytest.raises(ValueError, match=rf"compress\.{field}=") as err:
        CompressConfig(**{field: value})
    assert words in str(err.value)


def test_a_group_size_that_does_not_divide_a_width_is_refused_with_one_that_would():
    with pytest.raises(ValueError, match=r"group_size=32 does not divide the width\(s\) \[16\].*e\.g\. 16"):
        check_widths(SHAPE, Setting("rtn_group", bits=4, group_size=32), where="cell X")
    check_widths(SHAPE, Setting("rtn_group", bits=4, group_size=16), where="cell X")
    with pytest.raises(ValueError, match="2:4 pruning needs widths divisible by 4"):
        check_widths(Shape(1, 6, 1, 24, 8, 300), Setting("prune_2_4", sparsity=0.5), where="cell Y")


def test_budget_ladder_runs_in_1_2_5_steps_from_the_smallest_model_to_past_the_largest():
    assert budget_ladder(7_000, 560_000) == [1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6]
    assert budget_ladder(2_000, 2_000) == [2e3]


def test_best_under_a_budget_picks_the_lowest_loss_that_fits():
    sizes, losses = [10, 20, 40, 40], [3.0, 2.5, 2.0, 2.0]
    assert best_under(sizes, losses, 5) is None
    assert best_under(sizes, losses, 25) == 1
    assert best_under(sizes, losses, 100) == 2  # a tie goes to the first (then smaller) entry


def synthetic(form: str, seed: int, noise: float = 0.05):
    """16 cells (4 sizes x 4 token counts, D not a function of N) x the form's settings."""
    rng = np.random.default_rng(seed)
    n = np.repeat([1e4, 3e4, 1e5, 3e5], 4)
    d = np.tile([1e5, 1e6, 1e7, 3e6], 4) * np.repeat([1, 1.5, 2, 0.7], 4)
    extra = {"power": [0], "ptq": [3, 4, 8], "sparsity": [0.25, 0.5, 0.75]}[form]
    cells = np.tile(np.arange(16), len(extra))
    nn, dd, x = np.tile(n, len(extra)), np.tile(d, len(extra)), np.repeat(extra, 16).astype(float)
    law = {"power": lambda: 2e-2 * dd ** 0.4 / nn ** 0.6,
           "ptq": lambda: 5.0 * np.exp(-x / 1.5) * dd ** 0.3 / nn ** 0.5,
           "sparsity": lambda: 0.1 * np.expm1(-1.3 * np.log1p(-x)) * dd ** 0.2 / nn ** 0.3}[form]()
    return nn, dd, x, cells, law * np.exp(rng.normal(0, noise, len(law)))


TRUTH = {"power": {"C": 2e-2, "gamma_D": 0.4, "gamma_N": 0.6},
         "ptq": {"C": 5.0, "gamma_post": 1.5, "gamma_D": 0.3, "gamma_N": 0.5},
         "sparsity": {"C": 0.1, "b_S": 1.3, "gamma_D": 0.2, "gamma_N": 0.3}}


@pytest.mark.parametrize("form", ["power", "ptq", "sparsity"])
def test_degradation_fitter_recovers_a_known_law(form):
    n, d, x, cells, delta = synthetic(form, seed=1, noise=0.02)
    fit = fit_degradation(n, d, delta, form=form, bits=x, sparsity=x, units=cells, n_bootstrap=100)
    assert fit.ok and fit.n_points == len(delta) and fit.n_excluded == 0
    for key, true in TRUTH[form].items():
        assert fit.params[key] == pytest.approx(true, rel=0.15 if key == "C" else 0.05), key
        lo, hi = fit.ci[key]
        assert lo < fit.params[key] < hi
    assert 0.005 < fit.rms_log < 0.04  # the residual is the 2% noise put in, no more
    assert np.allclose(fit.predict(n, d, bits=x, sparsity=x), delta, rtol=0.1)


def test_degradation_intervals_cover_the_true_exponent_about_as_often_as_promised():
    hits = 0
    for seed in range(30):
        n, d, _, cells, delta = synthetic("power", seed)
        lo, hi = fit_degradation(n, d, delta, n_bootstrap=100, seed=seed, ci_level=0.9).ci["gamma_D"]
        hits += lo <= 0.4 <= hi
    assert 21 <= hits <= 30  # 90% intervals; a percentile bootstrap on 16 cells runs a little short


def test_changes_at_or_below_the_floor_are_left_out_and_too_few_points_skip_the_law():
    n, d, _, cells, delta = synthetic("power", seed=2)
    delta[:3] = [-1e-3, 0.0, 5e-5]
    fit = fit_degradation(n, d, delta, min_delta=1e-4, n_bootstrap=0)
    assert fit.ok and fit.n_excluded == 3 and fit.n_points == 13
    skipped = fit_degradation(n[:4], d[:4], delta[:4], min_delta=1e-4)
    assert skipped.status == "skipped" and "needs more points" in skipped.reason
    one_size = fit_degradation(np.full(8, 1e4), d[:8], np.abs(delta[:8]) + 1e-3)
    assert one_size.status == "skipped" and "two model sizes" in one_size.reason
