"""Bits per byte beside nats per token: the arithmetic, the bytes an evaluation's tokens stand for,
the results column, the fit on either, and an overlay of sweeps in bits per byte."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from llm_ray.core.records import EvalPoint, FitRecord, RunRecord, bits_per_byte
from llm_ray.fitting import FitConfig


def test_bits_per_byte_is_nats_per_token_over_ln2_times_bytes_per_token():
    assert bits_per_byte(8 * math.log(2), 8.0) == pytest.approx(1.0)
    # 1,000 tokens at 2.0 nats over 4,000 bytes: 2000 / (4000 ln 2) bits per byte
    assert bits_per_byte(2.0, 4000 / 1000) == pytest.approx(2000 / (4000 * math.log(2)))
    assert math.isnan(bits_per_byte(2.0, None))


def test_eval_bytes_per_token_counts_the_utf8_bytes_of_the_evaluated_text():
    from llm_ray.data.encode import EOT
    from llm_ray.data.prepare import _train_tokenizer
    from llm_ray.data.shards import eval_bytes_per_token, token_byte_lengths

    text = "naïve café 数据 ✓ scaling laws of tokens and bytes. " * 50
    tok = _train_tokenizer([text], 300, len(text))
    ids = np.array(tok.encode(text).ids + [tok.token_to_id(EOT)])
    assert token_byte_lengths(tok)[tok.token_to_id(EOT)] == 0  # <|endoftext|> stands for no text
    assert eval_bytes_per_token(tok, ids) * len(ids) == pytest.approx(len(text.encode("utf-8")))
    # A tokenizer without a byte-level decoder: the windows are decoded whole.
    from tokenizers import Tokenizer, models, pre_tokenizers

    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "ab": 1, "cd": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    assert token_byte_lengths(wl) is None
    assert eval_bytes_per_token(wl, np.array([[1, 2, 1]])) == pytest.approx(len("ab cd ab") / 3)


def test_results_rows_carry_bpb_beside_the_loss():
    from llm_ray.sweeps.results import COLUMNS, cell_rows

    class Cell:
        name, budget, n_layer, d_model, n_head, d_ff, params, params_non_embedding = "c", 1e13, 2, 64, 2, 256, 1000, 800

    history = ({"step": 0, "tokens": 0, "val_loss": 5.0},
               {"step": 10, "tokens": 1e4, "flops_exact": 1.0, "flops_kaplan": 1.0, "flops_deepseek": 1.0,
                "val_loss": 3.0, "val_bpb": bits_per_byte(3.0, 4.0)})
    rows = cell_rows("c", Cell, RunRecord(run_id="c", status="ok", history=history))
    assert "bpb" in COLUMNS and rows[-1]["bpb"] == pytest.approx(3.0 / (4.0 * math.log(2)))
    (point,) = RunRecord(run_id="c", status="ok", history=history).eval_points()
    assert point.val_bpb == rows[-1]["bpb"] and math.isnan(EvalPoint(1, 1, 1, 1, 1, val_loss=1).val_bpb)


def test_the_fit_runs_on_bits_per_byte_when_asked():
    cfg = FitConfig(metric="bpb")
    assert cfg.columns.loss == "bpb"
    assert FitConfig(**{**cfg.to_dict(), "plots": False}).columns.loss == "bpb"  # read back from fit.json
    assert FitConfig(metric="bpb", columns={"loss": "my_bpb"}).columns.loss == "my_bpb"
    with pytest.raises(ValueError, match="fit.metric"):
        FitConfig(metric="bits")


def test_two_sweeps_with_different_tokenizers_overlay_in_bits_per_byte(tmp_path):
    from llm_ray.reporting.fit import in_metric, write_comparison

    def table(nats_per_token, bytes_per_token):
        rows = [{"budget": b, "params": n, "loss": nats_per_token * (1 + 1e5 / n + n / 1e7),
                 "final": True, "status": "ok", "role": "sweep"} for b in (1e13, 1e14) for n in (1e5, 1e6, 3e6)]
        df = pd.DataFrame(rows)
        return df.assign(bpb=df["loss"] / (math.log(2) * bytes_per_token))

    a, b = table(3.0, 3.0), table(4.0, 4.0)  # a larger vocabulary: more nats per token, more bytes per token
    assert in_metric(a, "bpb")["loss"].tolist() == pytest.approx(in_metric(b, "bpb")["loss"].tolist())
    write_comparison(str(tmp_path), [("bpe-512", in_metric(a, "bpb"), FitRecord.failed("x"), "a"),
                                     ("bpe-4096", in_metric(b, "bpb"), FitRecord.failed("x"), "b")], metric="bpb")
    assert (tmp_path / "overlay.png").stat().st_size > 10_000
    assert "bits per byte" in (tmp_path / "compare.md").read_text()
    with pytest.raises(ValueError, match="fit.metric=bpb"):
        in_metric(a.drop(columns="bpb"), "bpb")
