"""The downstream stage for real: a tiny sweep trained by Ray Tune + Ray Train, then every cell
fine-tuned as a Tune trial on a labelled task, with the baselines, the fits and the report."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import CONF, ROOT, FAKE_SECRETS, TEST_DATA, grep_tree
from test_downstream_data import separable_task, write_jsonl
from wandb_reader import summarize

pytestmark = pytest.mark.ray
# 2 budgets x 2 shapes of 1-layer models on the stdlib slice: 4 cells of ~20-40 steps.
SWEEP = ["model=tiny", *TEST_DATA, "sweep.name=ds", "sweep.replicate_minima=0", "sweep.budgets=[1e10,2e10]",
         "sweep.shapes=[{n_layer:1,d_model:16,n_head:2},{n_layer:1,d_model:32,n_head:2}]",
         "sweep.min_tokens=1e4", "sweep.tokens_per_param=[0.1,1000]", "trainer.eval_every=1000",
         "trainer.log_every=1000", "trainer.eval_tokens=8192", "fit.n_bootstrap=20", "fit.predict_flops=[1e11]"]


def downstream_overrides(path: str) -> list:
    return ["downstream=jsonl", f"downstream.path={path}", "downstream.n_train=96", "downstream.n_test=100",
            "downstream.max_ci_halfwidth=0.1", "downstream.max_tokens=32", "downstream.epochs=6",
            "downstream.batch_size=16", "downstream.lr=3e-3", "downstream.n_bootstrap=20"]


@pytest.fixture(scope="module")
def task_path(tmp_path_factory):
    texts, labels = separable_task(240)
    return write_jsonl(tmp_path_factory.mktemp("task") / "task.jsonl",
                       [{"text": t, "label": ["colour", "animal"][y]} for t, y in zip(texts, labels)])


@pytest.fixture(scope="module")
def sweep_dir(ray_cluster, tmp_path_factory):
    from llm_ray.cli import compose_sweep
    from llm_ray.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    out = run_sweep(*compose_sweep(*SWEEP, f"trainer.storage_path={root}", "wandb.mode=offline"), log=lambda *a: None)
    return out["sweep_dir"]


@pytest.fixture(scope="module")
def first_run(sweep_dir, task_path):
    from llm_ray.cli import compose
    from llm_ray.downstream import run_on_sweep

    lines = []
    cfg = compose("sweep", [*SWEEP, *downstream_overrides(task_path), "wandb.mode=offline"])
    run_on_sweep(sweep_dir, cfg, log=lines.append)
    return lines


def results(sweep_dir: str) -> dict:
    return {p: open(p).read() for p in glob.glob(os.path.join(sweep_dir, "downstream", "*", "runs", "*", "result.json"))}


def test_every_cell_is_fine_tuned_beside_the_baselines_and_reported(sweep_dir, first_run):
    df = pd.read_parquet(os.path.join(sweep_dir, "downstream.parquet"))
    assert {"cell_id", "params", "flops", "task", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1"} <= set(df)
    cells = pd.read_parquet(os.path.join(sweep_dir, "results.parquet"))
    final = cells[cells["final"]].set_index("cell_id")
    ok = final[final["status"] == "ok"]
    assert len(ok) >= 3, final[["status", "reason"]]  # the sigmoid needs 3 cells
    assert df["kind"].value_counts().to_dict() == {"pretrained": len(ok), "scratch": 2, "baseline": 2}
    assert set(df["task"]) == {"jsonl"} and (df["n_test"] == 100).all()
    sizes = {c.split("-")[1] for c in df[df["kind"] == "pretrained"]["cell_id"]}  # C1e10-N18.5k-<key>
    assert set(df[df["kind"] == "scratch"]["cell_id"]) == {f"scratch-{n}" for n in sizes}
    assert ((df["accuracy_lo"] <= df["accuracy"]) & (df["accuracy"] <= df["accuracy_hi"])).all()
    row = df.set_index("cell_id")
    assert row.loc["majority", "accuracy"] == 0.5 and row.loc["tfidf_logreg", "accuracy"] == 1.0
    # A task any bag of words solves: every fine-tuned model gets it (the head and loss are wired right).
    assert (df[df["kind"] != "baseline"]["accuracy"] >= 0.95).all(), df[["cell_id", "accuracy"]]
    pre = df[df["kind"] == "pretrained"]
    assert (pre.set_index("cell_id")["pretrain_loss"] == final.loc[pre["cell_id"], "loss"]).all()
    report = open(os.path.join(sweep_dir, "report.md")).read()
    assert "## Downstream: `jsonl`" in report and "Best pre-trained cell" in report
    for png in ("downstream_jsonl_vs_flops.png", "downstream_jsonl_vs_loss.png"):
        assert os.path.getsize(os.path.join(sweep_dir, png)) > 10_000 and f"({png})" in report
    # Each fine-tune was a Tune trial in a worker process, not the driver.
    pids = {json.loads(t)["pid"] for t in results(sweep_dir).values()}
    assert os.getpid() not in pids
    runs = [summarize(f) for f in glob.glob(os.path.join(os.path.dirname(sweep_dir), "wandb", "wandb",
                                                         "offline-run-*", "*.wandb"))]
    (down,) = [r for r in runs if r["run"]["job_type"] == "downstream"]
    assert down["run"]["group"] == "ds" and down["summary"]["downstream/_type"] == "table-file"
    assert grep_tree(os.path.dirname(sweep_dir), FAKE_SECRETS.values()) == []


def test_a_rerun_fine_tunes_nothing_twice(sweep_dir, task_path, first_run):
    from llm_ray.cli import compose
    from llm_ray.downstream import run_on_sweep

    before = results(sweep_dir)
    n = len(pd.read_parquet(os.path.join(sweep_dir, "downstream.parquet"))) - 2  # less the 2 baselines
    assert len(before) == n
    lines = []
    run_on_sweep(sweep_dir, compose("downstream", [f"sweep_dir={sweep_dir}", *downstream_overrides(task_path),
                                                   "wandb.mode=disabled"]), log=lines.append)
    assert any(f"{n} fine-tunes already done (kept), 0 to run" in line for line in lines), lines
    assert results(sweep_dir) == before


def ok_cells(sweep_dir: str) -> list:
    cells = pd.read_parquet(os.path.join(sweep_dir, "results.parquet"))
    return sorted(cells[cells["final"] & (cells["status"] == "ok")]["cell_id"])


def copy_of(sweep_dir: str, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(sweep_dir, dst, ignore=shutil.ignore_patterns("downstream*", "tune"))
    return dst


def test_cells_without_saved_weights_are_refused_before_any_trial(sweep_dir, tmp_path, task_path):
    from llm_ray.finetune.config import DownstreamConfig
    from llm_ray.stages.downstream import run_downstream

    d = copy_of(sweep_dir, tmp_path)
    victim = os.path.join(d, "cells", ok_cells(d)[0], "weights.pt")
    os.remove(victim)
    cfg = DownstreamConfig(task="jsonl", path=task_path, n_train=96, n_test=100, max_ci_halfwidth=0.1, max_tokens=32)
    with pytest.raises(ValueError, match=rf"1 of \d finished cells .* have no saved weights.*{victim.split(os.sep)[-2]}.*trainer.save_weights"):
        run_downstream(d, cfg)
    assert not os.path.exists(os.path.join(d, "downstream"))


def test_a_checkpoint_of_another_vocabulary_is_refused(sweep_dir, tmp_path, task_path):
    from llm_ray.core.config import ModelConfig
    from llm_ray.finetune.config import DownstreamConfig
    from llm_ray.stages.downstream import run_downstream
    from llm_ray.training.model import Transformer

    d = copy_of(sweep_dir, tmp_path)
    victim = os.path.join(d, "cells", ok_cells(d)[-1], "weights.pt")
    torch.save(Transformer(ModelConfig(n_layer=1, d_model=16, n_head=2, seq_len=64, vocab_size=512)).state_dict(), victim)
    cfg = DownstreamConfig(task="jsonl", path=task_path, n_train=96, n_test=100, max_ci_halfwidth=0.1, max_tokens=32)
    with pytest.raises(ValueError, match=rf"cell {victim.split(os.sep)[-2]}: tokenizer/vocabulary mismatch.*1024 tokens.*512 rows"):
        run_downstream(d, cfg)
    assert not os.path.exists(os.path.join(d, "downstream"))


def test_the_command_reports_bad_input_as_one_error_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for args, message in ((["downstream.task=en_news"], "downstream.task='en_news' is not a known task"),
                          ([], f"sweep_dir='{tmp_path}' holds no plan.json")):
        proc = subprocess.run([sys.executable, "-m", "llm_ray.downstream", f"sweep_dir={tmp_path}", *args,
                               f"hydra.run.dir={tmp_path}/hydra"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and f"llm_ray.downstream: error: {message}" in proc.stderr, proc.stderr[-2000:]
