"""FLOPs ledger and parameter counts against published numbers (pure math, milliseconds)."""

import csv
import os

import pytest

from llm_ray.core import flops

DATA = os.path.join(os.path.dirname(__file__), "data")


def a4_rows():
    # Chinchilla (Hoffmann et al. 2022) Table A4; see tests/data/README.md.
    with open(os.path.join(DATA, "chinchilla_table_a4.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", a4_rows(), ids=lambda r: f"L{r['n_layer']}-d{r['d_model']}")
def test_exact_ledger_reproduces_chinchilla_table_a4_ratio(row):
    s = flops.Shape(n_layer=int(row["n_layer"]), d_model=int(row["d_model"]), n_head=int(row["n_head"]),
                    d_ff=int(row["d_ff"]), seq_len=int(row["seq_len"]), vocab_size=int(row["vocab_size"]),
                    head_dim=int(row["head_dim"]))
    assert round(flops.table_a4_ratio(s), 2) == float(row["published_ratio_F_over_6ND"])


def test_gpt2_small_has_124m_parameters_as_published():
    s = flops.Shape(n_layer=12, d_model=768, n_head=12, d_ff=3072, seq_len=1024, vocab_size=50257)
    n = flops.param_count(s)
    assert n.total == 124_439_808  # GPT-2 small, HF transformers' count with tied LM head
    assert n.non_embedding == n.total - 50257 * 768 - 1024 * 768


def test_exact_ledger_counts_the_lm_head_and_table_a4_switch_drops_it():
    s = flops.Shape(n_layer=2, d_model=64, n_head=2, d_ff=256, seq_len=64, vocab_size=4096)
    with_head = flops.flops_per_token(s).exact
    without = flops.flops_per_token(s, table_a4=True).exact
    assert with_head - without == pytest.approx(3 * 2 * 64 * 4096)
    # At this small scale the head is a large share of compute (Porian et al. 2024).
    assert (with_head - without) / with_head > 0.3


def test_kaplan_and_deepseek_ledgers_follow_their_formulas():
    s = flops.Shape(n_layer=6, d_model=384, n_head=6, d_ff=1536, seq_len=256, vocab_size=4096, bias=False)
    per = flops.flops_per_token(s)
    assert per.kaplan == 6 * 12 * 6 * 384 ** 2 + 6 * 6 * 2 * 384 + 6 * 384  # 6 N, N = 12 L d^2 + norms
    assert per.deepseek == 72 * 6 * 384 ** 2 + 12 * 6 * 384 * 256


def test_tokens_for_budget_inverts_training_flops():
    s = flops.Shape(n_layer=4, d_model=128, n_head=4, d_ff=512, seq_len=128, vocab_size=4096)
    for ledger in flops.LEDGERS:
        d = flops.tokens_for_budget(s, 3e13, ledger)
        assert getattr(flops.training_flops(s, d), ledger) == pytest.approx(3e13, rel=1e-12)


def test_mfu_is_achieved_over_peak():
    assert flops.mfu(tokens_per_s=1000, flops_per_tok=1e6, peak_flops=4e9) == pytest.approx(0.25)
