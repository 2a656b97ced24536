"""`python -m llm_ray.compare` on two sweep directories written by hand (no training): the files, the
words, the W&B table, and the refusals (different corpora, different tokenizers without bits per byte)."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm_ray.core.comparison import CompareConfig, CompareRecord
from llm_ray.core.config import DataConfig, ModelConfig, TrainJobConfig
from llm_ray.core.plan import Cell, SweepConfig
from llm_ray.core.records import PlanRecord, RunRecord
from llm_ray.io import storage
from llm_ray.stages.compare import compare_dirs
from llm_ray.sweeps.results import write_results
from test_compare_math import A, ALPHA, B, BETA, BUDGETS, E, n_opt
from wandb_reader import summarize

REPO = Path(__file__).resolve().parents[1]
DATA = {"sources": ["stdlib"], "exclude_tests": False, "max_bytes": None, "val_fraction": 0.05, "seed": 0,
        "vocab_size": 512, "delimiter": None}


def write_sweep(root: Path, name: str, k: float, *, seed: int, data=None, key="entry-512", bytes_per_token=3.0,
                bpb=False, e_ci=(1.6, 1.8)) -> str:
    """A finished sweep's directory: results.parquet (Chinchilla's law, B = A at k C, noise 0.01),
    plan.json, one cell's result.json (what it trained on) and fit.json (approach 3's E)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in BUDGETS:
        for i, n in enumerate(n_opt(c) * 10 ** np.linspace(-0.6, 0.6, 7)):
            d = c / (6 * n)
            loss = E + A / n**ALPHA + B / (k * d) ** BETA + rng.normal(0, 0.01)
            rows.append({"cell_id": f"C{c:.0e}-{i}", "run_id": f"C{c:.0e}-{i}", "budget": c, "params": n, "step": 10,
                         "tokens": d, "flops": c, "loss": loss, "final": True, "status": "ok", "role": "sweep",
                         **({"bpb": loss / math.log(2) / bytes_per_token} if bpb else {})})
    sweep_dir = root / name
    write_results(pd.DataFrame(rows), str(sweep_dir))
    cells = {r["cell_id"]: Cell(budget=r["budget"], n_layer=2, d_model=16, n_head=2, d_ff=64, params=int(r["params"]),
                                params_non_embedding=int(r["params"]), tokens=r["tokens"], steps=10,
                                global_batch_tokens=2048, lr=1e-3, num_workers=1, flops_per_token=6 * r["params"])
             for r in rows}
    plan = PlanRecord(sweep=SweepConfig(name=name, budgets=list(BUDGETS), sizes=[1e4]), cells=cells)
    storage.write_json(str(sweep_dir / "plan.json"), plan.to_json())
    first = rows[0]
    record = RunRecord(run_id=first["cell_id"], status="ok", params=int(first["params"]), tokens=first["tokens"],
                       steps=10, flops_exact=first["flops"], model=dataclasses.asdict(ModelConfig()),
                       history=({"step": 10, "val_loss": first["loss"]},),
                       job=TrainJobConfig(data=DataConfig(**(data or DATA))),
                       data={"key": key, "n_val_docs": 40, "n_train_docs": 800})
    storage.write_json(str(sweep_dir / "cells" / first["cell_id"] / "result.json"), record.to_json())
    storage.write_json(str(sweep_dir / "fit.json"), {
        "config": {"flops_per_param_token": 6.0}, "bootstrap": {"level": 0.9, "n_resamples": 100},
        "approach3": {"status": "ok", "E": 1.7, "A": A, "B": B, "alpha": ALPHA, "beta": BETA, "ci": {"E": list(e_ci)}}})
    return str(sweep_dir)


def test_compare_writes_a_typed_record_words_a_plot_and_a_wandb_table(tmp_path):
    a, b = write_sweep(tmp_path, "base", 1.0, seed=1), write_sweep(tmp_path, "variant", 1.5, seed=2)
    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "llm_ray.compare", f"sweep_dirs={a},{b}", f"out_dir={out}",
                           "compare.target_flops=[1e21]", "compare.n_resamples=200", f"wandb.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rec = CompareRecord.from_json(json.loads((out / "compare.json").read_text()))
    assert rec.labels == ("base", "variant") and rec.metric == "loss" and rec.trend in ("constant", "growing", "fading")
    assert rec.centre_ci[0] <= 1.5 <= rec.centre_ci[1] and rec.centre_ci[0] > 1
    assert rec.targets[0].flops == 1e21 and rec.targets[0].excludes_one
    assert rec.floor.identified and rec.floor.e_a == 1.7
    words = (out / "compare.md").read_text()
    assert "variant is worth 1." in words and "excludes 1" in words and "| 1e+19 |" in words
    assert (out / "compare.png").stat().st_size > 10_000
    assert "variant is worth" in proc.stdout
    run_files = glob.glob(f"{tmp_path}/**/offline-run-*/run-*.wandb", recursive=True)
    assert len(run_files) == 1, run_files
    run = summarize(run_files[0])
    assert run["run"]["job_type"] == "compare" and run["summary"]["trend"] == rec.trend
    table = next(h for h in run["history"] if "multiplier/path" in h)["multiplier/path"]
    logged = json.loads((Path(run_files[0]).parent / "files" / table).read_text())
    assert len(logged["data"]) == len(rec.budgets) + 1 and "k_low" in logged["columns"]


def test_a_missing_sweep_dir_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llm_ray.compare", f"sweep_dirs=[{tmp_path}/a,{tmp_path}/b]"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "holds no results.parquet" in proc.stderr


def test_sweeps_on_different_corpora_are_refused_naming_what_differs(tmp_path):
    a = write_sweep(tmp_path, "base", 1.0, seed=1)
    b = write_sweep(tmp_path, "other", 1.5, seed=2, data={**DATA, "sources": ["/data/books"]})
    with pytest.raises(ValueError, match="different data.*sources"):
        compare_dirs([a, b], CompareConfig(n_resamples=50), log=lambda *_: None)


def test_different_tokenizers_need_bits_per_byte(tmp_path):
    a = write_sweep(tmp_path, "base", 1.0, seed=1)
    b = write_sweep(tmp_path, "vocab4k", 1.5, seed=2, data={**DATA, "vocab_size": 4096}, key="entry-4096")
    with pytest.raises(ValueError, match="recorded no bits per byte"):
        compare_dirs([a, b], CompareConfig(n_resamples=50), log=lambda *_: None)


def test_with_bits_per_byte_sweeps_of_different_tokenizers_compare_in_bits_per_byte(tmp_path):
    a = write_sweep(tmp_path, "base", 1.0, seed=1, bpb=True, bytes_per_token=3.0)
    b = write_sweep(tmp_path, "vocab4k", 1.5, seed=2, data={**DATA, "vocab_size": 4096}, key="entry-4096",
                    bpb=True, bytes_per_token=3.0)
    rec = compare_dirs([a, b], CompareConfig(n_resamples=200), log=lambda *_: None)
    assert rec.metric == "bpb" and rec.floor is None
    assert rec.centre_ci[0] <= 1.5 <= rec.centre_ci[1]


def test_a_floor_whose_interval_reaches_zero_is_not_identified(tmp_path):
    a = write_sweep(tmp_path, "base", 1.0, seed=1, e_ci=(0.0, 2.1))
    b = write_sweep(tmp_path, "variant", 1.5, seed=2)
    rec = compare_dirs([a, b], CompareConfig(n_resamples=50), log=lambda *_: None)
    assert not rec.floor.identified and "not identified" in rec.floor.note


def test_the_named_experiment_composes_two_sweeps_that_differ_only_in_beta2():
    from llm_ray.cli import compose, compose_sweep

    cfg = compose("compare", ["+experiment=compare_beta2"])
    (la, a), (lb, b) = cfg.variants.items()
    (job_a, sweep_a, _), (job_b, sweep_b, _) = (compose_sweep(*cfg.common, *v) for v in (a, b))
    assert (la, lb) == ("beta2_999", "beta2_95")
    assert job_a.trainer.betas == [0.9, 0.999] and job_b.trainer.betas == [0.9, 0.95]
    assert sweep_a.budgets == sweep_b.budgets == [2.0e11, 5.0e11, 1.2e12] and sweep_a.held_out_budgets == []
    assert sweep_a.name != sweep_b.name
    assert job_a.data == job_b.data and job_a.model == job_b.model


def test_compare_is_no_stage_of_one_sweep():
    from llm_ray.stages.registry import get

    with pytest.raises(ValueError, match="compare"):
        get("compare", in_sweep=True)


def test_a_variant_whose_sweep_stops_stops_the_comparison_naming_it():
    from llm_ray.compare import run_variants

    with pytest.raises(ValueError, match=r"variants.bad: its sweep stopped \(exit code 2\)"):
        run_variants({"bad": ["sweep.budgets=[-1.0]"]}, ["sweep.dry_run=true"], log=lambda *_: None)
