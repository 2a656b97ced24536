"""sweep.schedule=wsd_branches on Ray Tune: the cells' trials, and the searcher that starts each
branch once its trunk's checkpoint exists.

The plan (which cells share a trunk, where each branch starts, what it costs) is pure math in
llm_ray.core.branches. Here it becomes one trial per cell:
- the trunk is the run of its longest cell: it trains at constant lr up to its own cooldown start,
  saving a branch point at every cooldown start on the way (its own included) into
  `<trunks_dir>/<trunk_id>/points/step-<s0>` through llm_ray.io.storage, then trains its own
  cooldown. (A trunk trial that stopped at its last point, and a branch from there, would spend
  the same FLOPs in one more trial.) The trunk id is a content key of its config without its
  length or cooldown, so a re-run, an added budget or a held-out run of the same model continues
  the trunk from its last point instead of step 0;
- every other cell is a branch: its own run (`trainer.schedule=wsd`, the cell's D) started from
  its point (`RunSpec.start_from`), writing the cell's result.json as any cell does;
- `BranchTrials`, a Tune Searcher, hands Tune the trunk runs first, then each branch as soon as
  its point exists, so a waiting branch never holds a slot.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Optional

from ray.tune.search import Searcher

from llm_ray.core.branches import branch_start, cooldown_flops, plan_trunks
from llm_ray.core.config import TrainJobConfig
from llm_ray.core.records import RunRecord
from llm_ray.io import storage
from llm_ray.io.sweepdir import read_record_if_any
from llm_ray.sweeps.cells import PlannedCell, cell_trial, content_key
from llm_ray.training.launch import RunSpec
from llm_ray.training.points import POINT_DONE, branch_point_url

COOLDOWN_FIELDS = ("tokens", "cooldown_fraction", "cooldown_shape", "cooldown_min_lr_ratio", "save_weights")
"""What a trunk's constant-lr trajectory does not depend on (left out of its id)."""


def branch_trials(pending: list[PlannedCell], specs: list[RunSpec], trunks_dir: str, log=print) -> list[dict]:
    """The trials of the pending cells: per trunk, the run that carries it (the cell whose cooldown
    starts at the furthest missing point), then the branches, earliest branch point first."""
    spec_of = {p.cell: s for p, s in zip(pending, specs)}
    fraction = pending[0].job.trainer.cooldown_fraction
    carriers, branches = [], []
    for trunk in plan_trunks([p.cell for p in pending], fraction):
        members = [spec_of[c] for c in trunk.cells]
        trunk_dir = storage.join(trunks_dir, trunk_id(members[0].job))
        have = existing_points(trunk_dir)
        missing = [s0 for s0 in trunk.points if s0 not in have]
        carrier = max((i for i, c in enumerate(trunk.cells) if missing and branch_start(c, fraction) == missing[-1]),
                      default=None)
        for i, (cell, spec) in enumerate(zip(trunk.cells, members)):
            s0, per_step = branch_start(cell, fraction), cell.global_batch_tokens * cell.flops_per_token
            if i == carrier:
                start = max((s for s in have if s < missing[0]), default=None)
                run = dataclasses.replace(
                    spec, trunk_dir=trunk_dir, save_at=tuple(missing),
                    start_from=branch_point_url(trunk_dir, start) if start is not None else None,
                    cell={**spec.cell, "trunk": trunk_dir.rsplit("/", 1)[1], "saves": missing})
                carriers.append({**cell_trial(run), "flops": (cell.steps - (start or 0)) * per_step,
                                 "skip_flops": (start or 0) * per_step, "carries": trunk_dir})
                continue
            run = dataclasses.replace(spec, start_from=branch_point_url(trunk_dir, s0),
                                      cell={**spec.cell, "trunk": trunk_dir.rsplit("/", 1)[1], "branch_start": s0})
            branches.append({**cell_trial(run), "needs": run.start_from, "trunk_dir": trunk_dir,
                             "flops": cooldown_flops(cell, fraction), "skip_flops": s0 * per_step})
    carriers.sort(key=lambda t: -t["flops"])
    branches.sort(key=lambda t: t["spec"].cell["branch_start"])
    log(f"sweep: wsd_branches: {len(carriers)} runs carry their trunks ({sum(t['flops'] for t in carriers):.3g} "
        f"FLOPs), {len(branches)} branch from them ({sum(t['flops'] for t in branches):.3g} FLOPs)")
    return carriers + branches


def trunk_id(cell_job: TrainJobConfig) -> str:
    """A trunk's name: its shape and a content key of its cells' config without their length or
    cooldown (every length of one trunk is one trajectory, kept in one directory)."""
    return (f"trunk-L{cell_job.model.n_layer}-d{cell_job.model.d_model}-"
            f"{content_key(cell_job, drop_trainer=COOLDOWN_FIELDS)}")


def existing_points(trunk_dir: str) -> list[int]:
    """The steps of a trunk's complete branch points (those with their point.json)."""
    fs, path = storage.fs_and_path(storage.join(trunk_dir, "points"))
    found = fs.glob(f"{path}/step-*/{POINT_DONE}") if fs.exists(path) else []
    return sorted(int(m.group(1)) for m in (re.search(r"step-(\d+)/", p) for p in found) if m)


class BranchTrials(Searcher):
    """Hands Tune the sweep's trials in the order given, each once what it `needs` (its trunk's
    branch point) exists; a branch never holds a slot while it waits. A branch whose trunk ended
    without its point gets its record here (its trunk's divergence, or a failure) and no trial.

    Trials are planned from storage, not from Tune's state: `save` keeps nothing, and a re-run
    sweep plans again from the points and records that exist."""

    def __init__(self, trials: list[dict], poll_s: float = 1.0, log=print):
        super().__init__()
        self.queue, self.poll_s, self.log = list(trials), poll_s, log
        self.ready: set = set()
        self.checked: dict = {}
        self.running: dict = {}
        self.ended_trunks: dict = {}
        """trunk dir -> run dir of the trial that carried it, once that trial has ended."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        self._settle_unreachable()
        for i, t in enumerate(self.queue):
            if self._ready(t.get("needs")):
                self.running[trial_id] = self.queue.pop(i)
                return {"trial": self.running[trial_id]}
        return None if self.queue else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        t = self.running.pop(trial_id, None)
        if t is not None and t.get("carries"):
            self.ended_trunks[t["carries"]] = t["spec"].run_dir

    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def _ready(self, needs: Optional[str], force: bool = False) -> bool:
        if needs is None or needs in self.ready:
            return True
        now = time.monotonic()
        if force or now - self.checked.get(needs, -1e9) >= self.poll_s:
            self.checked[needs] = now
            if storage.exists(storage.join(needs, POINT_DONE)):
                self.ready.add(needs)
        return needs in self.ready

    def _settle_unreachable(self) -> None:
        for t in [t for t in self.queue if t.get("trunk_dir") in self.ended_trunks]:
            if not self._ready(t["needs"], force=True):
                self.queue.remove(t)
                record = unreachable_record(t["spec"], self.ended_trunks[t["trunk_dir"]])
                storage.write_json(storage.join(t["spec"].run_dir, "result.json"), record.to_json())
                self.log(f"sweep: {record.run_id}: {record.status}: {record.reason}")


def unreachable_record(branch: RunSpec, carrier_dir: str) -> RunRecord:
    """The record of a branch whose trunk's run ended before its point: a trunk that diverged at
    constant lr before the cooldown start is the cell's own run diverging there (the same steps);
    anything else is a failure, retried by the next run of the sweep."""
    cell = branch.cell
    trunk = read_record_if_any(carrier_dir)
    what = f"its trunk {cell['trunk']} ended before the branch point at step {cell['branch_start']}"
    if trunk is not None and trunk.status == "diverged":
        return RunRecord(run_id=cell["cell_id"], status="diverged", reason=f"{what}: diverged ({trunk.reason})",
                         cell=dict(cell))
    return RunRecord.failed(cell["cell_id"], f"{what}: {trunk.status + ' ' + trunk.reason if trunk else 'no record'}",
                            cell)
