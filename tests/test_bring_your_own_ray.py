"""Bring your own model, tokenizer and data, for real (Ray Tune + Ray Train, CPU): a sweep of
model=llama on one large text file, and a sweep of a user's `model._target_` with a tokenizer.json,
each with no override beyond naming them; both fit, their results carry bits per byte, and the
report overlays the two in bits per byte."""

from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest

from llm_ray.data import stdlib_text_files

pytestmark = pytest.mark.ray
# The smoke preset with sizes that give three distinct shapes for these vocabularies (700-1,024 tokens),
# smaller budgets and a shorter held-out set.
SMOKE = ["sweep=smoke", "sweep.sizes=[2e4,5.5e4,1e5]", "sweep.budgets=[2e10,5e10]", "fit.n_bootstrap=20",
         "trainer.eval_every=40", "trainer.log_every=40", "trainer.eval_tokens=8192", "wandb.mode=disabled"]


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """A ~5 MB text file (this machine's stdlib sources, joined by blank lines), and a tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("byo")
    parts, size = [], 0
    for path in stdlib_text_files():
        text = open(path, encoding="utf-8", errors="replace").read()
        parts.append(text)
        size += len(text.encode())
        if size > 5_000_000:
            break
    book = d / "dump.txt"
    book.write_text("\n\n".join(parts))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(parts[:200], trainers.BpeTrainer(vocab_size=700, show_progress=False,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(d / "tokenizer.json"))
    return str(book), str(d / "tokenizer.json")


def sweep(tmp_path, *overrides):
    from llm_ray.cli import compose_sweep
    from llm_ray.sweep import run_sweep

    logs = []
    out = run_sweep(*compose_sweep(*SMOKE, f"trainer.storage_path={tmp_path}", *overrides), log=logs.append)
    return out, logs


@pytest.fixture(scope="module")
def two_sweeps(ray_cluster, one_file, tmp_path_factory):
    book, tokenizer = one_file
    llama = sweep(tmp_path_factory.mktemp("llama"), "model=llama", f"data.sources=[{book}]", "sweep.name=llama-bpe1024",
                  "data.vocab_size=1024")
    mine = sweep(tmp_path_factory.mktemp("mine"), "model._target_=user_model.ReluSquaredGPT", f"data.sources=[{book}]",
                 f"data.tokenizer={tokenizer}", "sweep.name=mine-tok700")
    return llama, mine


def test_llama_and_a_user_model_sweep_one_large_file_fit_and_carry_bpb(two_sweeps):
    (llama, llama_logs), (mine, _) = two_sweeps
    assert any("dump.txt" in m and "cut into documents" in m for m in llama_logs), llama_logs[:20]
    models = []
    for out, vocab in ((llama, 1024), (mine, 701)):
        df = pd.read_parquet(os.path.join(out["sweep_dir"], "results.parquet"))
        assert set(df["status"]) == {"ok"} and df["cell_id"].nunique() >= 5
        assert df["bpb"].notna().all() and (df["bpb"] > 0).all()
        fit = json.load(open(os.path.join(out["sweep_dir"], "fit.json")))
        # Six tiny cells: a law, or (when every budget is best at the ladder's smallest size) a refusal
        # that says so; never a crash that leaves no fit.json.
        a3 = fit["approach3"]
        assert a3["status"] == "ok" or "extend the ladder" in a3.get("reason", ""), a3
        cell = json.load(open(os.path.join(out["sweep_dir"], "cells", df["cell_id"].iloc[0], "result.json")))
        assert cell["model"]["vocab_size"] == vocab  # mine: the tokenizer.json's 700 + <|endoftext|>
        assert cell["final_val_bpb"] == pytest.approx(
            cell["final_val_loss"] / (math.log(2) * cell["val_bytes_per_token"]))
        models.append((cell["model"]["family"], cell["model"]["_target_"]))
    assert models == [("llama", None), ("gpt2", "user_model.ReluSquaredGPT")]


def test_the_report_overlays_two_tokenizers_in_bits_per_byte(two_sweeps, tmp_path):
    from llm_ray.fitting import FitConfig
    from llm_ray.reporting.fit import redraw

    (llama, _), (mine, _) = two_sweeps
    out = redraw([llama["sweep_dir"], mine["sweep_dir"]], FitConfig(metric="bpb", n_bootstrap=0),
                 out_dir=str(tmp_path / "compare"), log=lambda m: None)
    assert (tmp_path / "compare" / "overlay.png").stat().st_size > 10_000
    text = (tmp_path / "compare" / "compare.md").read_text()
    assert "bits per byte" in text and "llama-bpe1024" in text and "mine-tok700" in text
