"""wsd_branches trials from the points on storage, and the searcher that releases branches: no training."""

from __future__ import annotations

import json
import os

import pytest

from llm_ray.core.schedules import cooldown_start

# 1 size x 3 budgets of the smoke preset's smallest model: one trunk serving 3 cells.
GRID = ["sweep=smoke", "sweep.schedule=wsd_branches", "sweep.sizes=[1.5e4]", "sweep.budgets=[5e10,1e11,1.5e11]",
        "sweep.dry_run=true", "wandb.mode=disabled"]


@pytest.fixture
def planned(tmp_path):
    from llm_ray.cli import compose_sweep
    from llm_ray.sweeps.runner import cell_spec, plan_sweep, sweep_base
    from llm_ray.training.launch import resolve_paths

    base, sweep, _ = compose_sweep(*GRID, f"trainer.storage_path={tmp_path}")
    base = sweep_base(resolve_paths(base), sweep)
    sweep_dir, cells, plan = plan_sweep(base, sweep)
    specs = [cell_spec(p, None, sweep, sweep_dir, 1e9) for p in cells]
    return cells, specs, os.path.join(sweep_dir, "trunks"), plan


def make_point(trunk_dir: str, step: int) -> None:
    from llm_ray.training.launch import POINT_DONE, branch_point_url

    os.makedirs(branch_point_url(trunk_dir, step), exist_ok=True)
    with open(os.path.join(branch_point_url(trunk_dir, step), POINT_DONE), "w") as f:
        json.dump({"step": step}, f)


def test_the_longest_cell_carries_its_trunk_and_the_others_branch_from_its_points(planned):
    from llm_ray.sweeps.branches import branch_trials

    cells, specs, trunks_dir, plan = planned
    starts = [cooldown_start(p.cell.steps, 0.2) for p in cells]
    assert plan.trunks[0]["points"] == sorted(starts)
    carrier, *branches = branch_trials(cells, specs, trunks_dir, log=print)
    longest = max(cells, key=lambda p: p.cell.steps)
    assert carrier["spec"].cell["cell_id"] == longest.cell_id
    assert carrier["spec"].start_from is None and carrier["spec"].save_at == tuple(sorted(starts))
    assert carrier["needs"] is None and carrier["spec"].job.trainer.schedule == "wsd"
    assert [b["spec"].cell["branch_start"] for b in branches] == sorted(starts)[:2]
    for b in branches:
        assert b["needs"] == b["spec"].start_from and b["needs"].startswith(carrier["spec"].trunk_dir)
        assert b["flops"] < b["spec"].cell["budget"] / 4  # a branch trains only its 20% cooldown


def test_a_rerun_continues_the_trunk_from_its_last_point_and_extends_it_for_a_longer_cell(planned):
    from llm_ray.sweeps.branches import branch_trials

    cells, specs, trunks_dir, _ = planned
    trunk_dir = branch_trials(cells, specs, trunks_dir)[0]["spec"].trunk_dir
    first, second, third = sorted(cooldown_start(p.cell.steps, 0.2) for p in cells)
    make_point(trunk_dir, first)
    make_point(trunk_dir, second)
    order = sorted(range(3), key=lambda i: cells[i].cell.steps)
    (carrier,) = branch_trials([cells[order[2]]], [specs[order[2]]], trunks_dir)
    assert carrier["spec"].start_from.endswith(f"step-{second:08d}") and carrier["spec"].save_at == (third,)
    assert carrier["flops"] < carrier["spec"].cell["budget"] * 0.5  # the finished segment is not trained again
    make_point(trunk_dir, third)
    (branch,) = branch_trials([cells[order[0]]], [specs[order[0]]], trunks_dir)  # its point exists: a branch
    assert branch["needs"].endswith(f"step-{first:08d}")


def test_branches_wait_for_their_point_and_a_trunk_that_diverged_before_it_settles_them(planned, tmp_path):
    from llm_ray.core.records import RunRecord
    from llm_ray.sweeps.branches import BranchTrials, branch_trials

    cells, specs, trunks_dir, _ = planned
    trials = branch_trials(cells, specs, trunks_dir)
    trunk_dir = trials[0]["spec"].trunk_dir
    searcher = BranchTrials(trials, poll_s=0.0, log=print)
    assert searcher.suggest("t1")["trial"] is trials[0]  # the carrier starts at once
    assert searcher.suggest("t2") is None  # both branches wait for their points
    make_point(trunk_dir, trials[1]["spec"].cell["branch_start"])
    assert searcher.suggest("t3")["trial"] is trials[1]
    os.makedirs(trials[0]["spec"].run_dir)
    with open(os.path.join(trials[0]["spec"].run_dir, "result.json"), "w") as f:
        json.dump(RunRecord(run_id="carrier", status="diverged", reason="loss stayed above its start").to_json(), f)
    searcher.on_trial_complete("t1")
    assert searcher.suggest("t4") == searcher.FINISHED
    rec = json.load(open(os.path.join(trials[2]["spec"].run_dir, "result.json")))
    assert rec["status"] == "diverged" and "before the branch point" in rec["reason"]
