"""The downstream stage for real: the session's smoke sweep trained by Ray Tune + Ray Train, then every
cell fine-tuned as a Tune trial on a labelled task, with the baselines, the fits and the report."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import CONF, ROOT, FAKE_SECRETS, SMOKE, copy_sweep, grep_tree
from test_downstream_data import separable_task, write_jsonl
from wandb_reader import summarize

pytestmark = pytest.mark.ray


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
def sweep_dir(smoke_sweep, tmp_path_factory):
    """A copy of the session's smoke sweep (2 budgets x 3 sizes, 16.8k-87.4k parameters)."""
    return copy_sweep(smoke_sweep[0]["sweep_dir"], tmp_path_factory.mktemp("downstream"))


@pytest.fixture
def plan_cells(smoke_sweep) -> list:
    """The plan's cells, all finished ok (the stage leaves the seed replicates out)."""
    return sorted(smoke_sweep[0]["plan"].cells)


@pytest.fixture(scope="module")
def first_run(sweep_dir, task_path):
    from llm_ray.cli import compose
    from llm_ray.downstream import run_on_sweep

    lines = []
    cfg = compose("sweep", [*SMOKE, *downstream_overrides(task_path), "wandb.mode=offline"])
    run_on_sweep(sweep_dir, cfg, log=lines.append)
    return lines


def results(sweep_dir: str) -> dict:
    return {p: open(p).read() for p in glob.glob(os.path.join(sweep_dir, "downstream", "*", "runs", "*", "result.json"))}


def test_every_cell_is_fine_tuned_beside_the_baselines_and_reported(sweep_dir, first_run, plan_cells, smoke_sweep):
    df = pd.read_parquet(os.path.join(sweep_dir, "downstream.parquet"))
    assert {"cell_id", "params", "flops", "task", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1"} <= set(df)
    cells = pd.read_parquet(os.path.join(sweep_dir, "results.parquet"))
    final = cells[cells["final"]].set_index("cell_id")
    assert len(plan_cells) >= 3  # the sigmoid needs 3 cells
    sizes = {c.split("-")[1] for c in plan_cells}  # C5e10-N16.8k-<key>
    assert df["kind"].value_counts().to_dict() == {"pretrained": len(plan_cells), "scratch": len(sizes), "baseline": 2}
    assert set(df[df["kind"] == "pretrained"]["cell_id"]) == set(plan_cells)
    assert set(df["task"]) == {"jsonl"} and (df["n_test"] == 100).all()
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
    # Beside the trials' runs: the W&B folder their records name (the copied sweep's original one).
    trials_wandb = os.path.join(smoke_sweep[1], "wandb", "wandb", "offline-run-*", "*.wandb")
    (down,) = [r for r in map(summarize, glob.glob(trials_wandb)) if r["run"]["job_type"] == "downstream"]
    assert down["run"]["group"] == "smoke" and down["summary"]["downstream/_type"] == "table-file"
    for root in (os.path.dirname(sweep_dir), smoke_sweep[1]):
        assert grep_tree(str(root), FAKE_SECRETS.values()) == []


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


def test_cells_without_saved_weights_are_refused_before_any_trial(sweep_dir, tmp_path, task_path, plan_cells):
    from llm_ray.finetune.config import DownstreamConfig
    from llm_ray.stages.downstream import run_downstream

    d = copy_sweep(sweep_dir, tmp_path, leave_out=("downstream*", "tune"))
    victim = os.path.join(d, "cells", plan_cells[0], "weights.pt")
    os.remove(victim)
    cfg = DownstreamConfig(task="jsonl", path=task_path, n_train=96, n_test=100, max_ci_halfwidth=0.1, max_tokens=32)
    with pytest.raises(ValueError, match=rf"1 of \d finished cells .* have no saved weights.*{victim.split(os.sep)[-2]}.*trainer.save_weights"):
        run_downstream(d, cfg)
    assert not os.path.exists(os.path.join(d, "downstream"))


def test_a_checkpoint_of_another_vocabulary_is_refused(sweep_dir, tmp_path, task_path, plan_cells):
    from llm_ray.core.config import ModelConfig
    from llm_ray.finetune.config import DownstreamConfig
    from llm_ray.stages.downstream import run_downstream
    from llm_ray.training.model import Transformer

    d = copy_sweep(sweep_dir, tmp_path, leave_out=("downstream*", "tune"))
    victim = os.path.join(d, "cells", plan_cells[-1], "weights.pt")
    torch.save(Transformer(ModelConfig(n_layer=1, d_model=16, n_head=2, seq_len=64, vocab_size=256)).state_dict(), victim)
    cfg = DownstreamConfig(task="jsonl", path=task_path, n_train=96, n_test=100, max_ci_halfwidth=0.1, max_tokens=32)
    with pytest.raises(ValueError, match=rf"cell {victim.split(os.sep)[-2]}: tokenizer/vocabulary mismatch.*512 tokens.*256 rows"):
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
