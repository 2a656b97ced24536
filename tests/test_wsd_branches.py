"""sweep.schedule=wsd_branches for real: trunks carried by their longest cells, cooldown branches from
their checkpoints, a killed sweep resumed, and a branch against the same cell trained straight through."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import CONF, ROOT
from llm_ray.core.schedules import cooldown_start

pytestmark = pytest.mark.ray
# The smoke grid at smaller budgets (3 sizes x 2 budgets): each size's trunk serves 2 cells.
BRANCHES = ["sweep=smoke", "sweep.schedule=wsd_branches", "sweep.budgets=[3e10,8e10]", "fit.n_bootstrap=20", "trainer.eval_every=40",
            "trainer.log_every=40", "wandb.mode=disabled"]


def compose_sweep(*overrides):
    from llm_ray.cli import compose_sweep as compose

    return compose(*overrides)


def point_files(sweep_dir: str) -> dict:
    """Every file of every complete branch point: path -> (size, mtime_ns)."""
    out = {}
    for done in glob.glob(os.path.join(sweep_dir, "trunks", "*", "points", "*", "point.json")):
        for path in glob.glob(os.path.join(os.path.dirname(done), "**", "*"), recursive=True):
            if os.path.isfile(path):
                out[path] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def killed_and_resumed(ray_cluster, tmp_path_factory):
    """A wsd_branches smoke sweep killed as soon as its first branch point is complete, then resumed."""
    from llm_ray.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("wsd")
    sweep_dir = os.path.join(tmp, "smoke")
    # Every process loading a DeepSpeed JIT op holds a lock file in the ops cache for a moment; one
    # killed then would leave it behind and block every later load. The killed sweep gets a copy.
    ops = os.path.join(tmp, "torch_extensions")
    shutil.copytree(os.path.join(sys.prefix, "torch_extensions"), ops, ignore=shutil.ignore_patterns("lock"),
                    dirs_exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_EXTENSIONS_DIR": ops}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "llm_ray.sweep", *BRANCHES, f"trainer.storage_path={tmp}",
                             f"hydra.run.dir={tmp}/hydra"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and not point_files(sweep_dir):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its trials and Ray, mid-trunk
    proc.wait()
    before = point_files(sweep_dir)
    assert before, "no branch point was written before the deadline"
    finished = {c: open(p).read() for p in glob.glob(os.path.join(sweep_dir, "cells", "*", "result.json"))
                for c in [p.split(os.sep)[-2]]}
    out = run_sweep(*compose_sweep(*BRANCHES, f"trainer.storage_path={tmp}"))
    return out, sweep_dir, before, finished


def records(sweep_dir: str) -> dict:
    return {os.path.basename(os.path.dirname(p)): json.load(open(p))
            for p in glob.glob(os.path.join(sweep_dir, "cells", "*", "result.json"))}


def test_killed_branch_sweep_resumes_without_retraining_a_finished_segment(killed_and_resumed):
    out, sweep_dir, before, finished = killed_and_resumed
    assert point_files(sweep_dir).items() >= before.items()  # points written before the kill: untouched
    recs = records(sweep_dir)
    assert set(recs) == set(out["plan"].cells) and {r["status"] for r in recs.values()} == {"ok"}
    for c, text in finished.items():
        assert open(os.path.join(sweep_dir, "cells", c, "result.json")).read() == text
    killed_points = {int(p.split("step-")[1].split(os.sep)[0]) for p in before}
    carriers = {c: r for c, r in recs.items() if r["cell"].get("saves")}
    branches = {c: r for c, r in recs.items() if "branch_start" in r["cell"]}
    assert len(carriers) == 3 and len(branches) == 3  # one trunk per size, one branch each
    # The trunk cut by the kill went on from its last point, not from step 0.
    resumed = [r for r in carriers.values() if r["resumed_from_step"] in killed_points]
    assert resumed, [(r["resumed_from_step"], r["cell"]["saves"]) for r in carriers.values()]
    for r in resumed + list(branches.values()):
        steps = [h["step"] for h in r["history"] if "train_loss" in h]
        assert steps == list(range(1, r["steps"] + 1))  # every step once, trunk part included
    for r in branches.values():  # a branch trains only its cooldown
        assert r["resumed_from_step"] == r["cell"]["branch_start"] == cooldown_start(r["steps"], 0.2)
        assert r["tokens"] == r["cell"]["tokens"] and r["flops_exact"] == pytest.approx(r["cell"]["budget"], rel=0.1)
    # Downstream as for any sweep: one results row set per cell, fitted and reported.
    df = pd.read_parquet(os.path.join(sweep_dir, "results.parquet"))
    assert set(df["cell_id"]) == set(recs) and set(df["status"]) == {"ok"}
    assert out["fit"].error is None and os.path.exists(os.path.join(sweep_dir, "report.md"))
    plan = out["plan"]
    assert plan.flops_to_spend["wsd_branches"] < plan.flops_to_spend["independent"]
    assert "wsd_branches" in plan.table and "<- this sweep" in plan.table


def test_a_finished_branch_sweep_trains_nothing_again(killed_and_resumed):
    from llm_ray.sweeps.runner import run_sweep_cells

    out, sweep_dir, _, _ = killed_and_resumed
    points = point_files(sweep_dir)
    texts = {c: json.dumps(r, sort_keys=True) for c, r in records(sweep_dir).items()}
    again = run_sweep_cells(*compose_sweep(*BRANCHES, f"trainer.storage_path={os.path.dirname(sweep_dir)}")[:2])
    assert again.trained == []
    assert point_files(sweep_dir) == points
    assert {c: json.dumps(r, sort_keys=True) for c, r in records(sweep_dir).items()} == texts


def test_branch_from_its_trunk_point_equals_the_cell_trained_straight_through(killed_and_resumed, tmp_path):
    """fp32: the branch (trunk steps from the killed sweep's point, then its own cooldown) and the
    same cell's job run from step 0 on Ray Train workers agree to 1e-6 at every step."""
    from llm_ray.core.config import job_from_record
    from llm_ray.training.launch import run_training

    _, sweep_dir, before, _ = killed_and_resumed
    killed_points = {int(p.split("step-")[1].split(os.sep)[0]) for p in before}
    branch = min((r for r in records(sweep_dir).values() if r["cell"].get("branch_start") in killed_points),
                 key=lambda r: r["steps"])
    job = job_from_record(branch["job"])
    job = dataclasses.replace(job, trainer=dataclasses.replace(job.trainer, name="straight", storage_path=str(tmp_path)),
                              wandb=dataclasses.replace(job.wandb, mode="disabled"))
    straight = run_training(job)
    assert straight.resumed_from_step is None and straight.steps == branch["steps"]
    a = {h["step"]: h for h in straight.history}
    b = {h["step"]: h for h in branch["history"]}
    for step in range(1, branch["steps"] + 1):
        assert b[step]["train_loss"] == pytest.approx(a[step]["train_loss"], abs=1e-6), step
        assert b[step]["lr"] == pytest.approx(a[step]["lr"], rel=1e-12), step
    start = branch["cell"]["branch_start"]
    assert b[start + 1]["lr"] < b[start]["lr"]  # the cooldown is the branch's own
    assert branch["final_val_loss"] == pytest.approx(straight.final_val_loss, abs=1e-6)
