"""A Tune callback that prints cells done / running / pending and an ETA from the FLOPs trained.

The ETA is the FLOPs left divided by the rate so far (FLOPs actually trained per second of the
sweep): a cell that diverged or failed early counts what it trained, and its unspent budget leaves
the work to do, so neither inflates the rate nor stays in the remainder.
"""

from __future__ import annotations

import math
import time


class Progress:
    """The sweep's bookkeeping, without Ray: cells started, FLOPs each trained, cells closed."""

    def __init__(self, total_cells: int, already_done: int, flops_total: float, t0: float):
        self.total_cells, self.already_done, self.flops_total, self.t0 = total_cells, already_done, flops_total, t0
        self.budget: dict = {}
        """Budget C of each started cell (by trial id)."""
        self.trained: dict = {}
        """FLOPs each started cell has trained so far (final once closed)."""
        self.closed: set = set()

    def start(self, trial_id: str, budget: float) -> None:
        self.budget[trial_id] = budget
        self.trained.setdefault(trial_id, 0.0)

    def report(self, trial_id: str, flops: float) -> None:
        """A running cell reported how far it got."""
        if trial_id not in self.closed:
            self.trained[trial_id] = max(self.trained.get(trial_id, 0.0), flops)

    def close(self, trial_id: str, flops: float | None) -> None:
        """A cell ended (ok, diverged or failed) having trained `flops` (None: as last reported)."""
        if flops is not None:
            self.trained[trial_id] = flops
        self.closed.add(trial_id)

    def flops_left(self) -> float:
        """Budgets of the cells not closed, less what the running ones already trained."""
        closed_budget = sum(self.budget[t] for t in self.closed)
        running = sum(f for t, f in self.trained.items() if t not in self.closed)
        return max(0.0, self.flops_total - closed_budget - running)

    def eta_s(self, now: float) -> float:
        trained = sum(self.trained.values())
        return (now - self.t0) * self.flops_left() / trained if trained > 0 else math.nan

    def line(self, now: float) -> str:
        running = len(self.budget) - len(self.closed)
        done = self.already_done + len(self.closed)
        pending = self.total_cells - done - running
        return (f"sweep: {done}/{self.total_cells} cells done, {running} running, {pending} pending; "
                f"elapsed {(now - self.t0) / 60:.1f} min, ETA {self.eta_s(now) / 60:.1f} min")


def trained_flops(cells_dir: str, cell: dict) -> float | None:
    """C the cell's result.json (its RunRecord) says it trained; None when it has none (a failed
    cell's record carries no FLOPs: it then counts as far as it last reported)."""
    from llm_ray.io import storage
    from llm_ray.io.sweepdir import read_record_if_any

    record = read_record_if_any(storage.join(cells_dir, cell["cell_id"]))
    return None if record is None else record.flops_exact


def _say(message: str) -> None:
    """Print, looked up at call time: Tune pickles its callbacks, and Ray may have replaced
    builtins.print by then, so the callback must not hold the print function itself."""
    print(message, flush=True)


def make_progress_callback(total_cells: int, already_done: int, flops_total: float, cells_dir: str):
    from ray import tune

    class SweepProgress(tune.Callback):
        def __init__(self):
            self.progress = Progress(total_cells, already_done, flops_total, time.time())

        def on_trial_start(self, iteration, trials, trial, **info):
            # The work a trial does itself: a wsd_branches branch trains only its cooldown
            # (runner.cell_trial: `flops`), the trunk steps before it (`skip_flops`) were trained
            # by the run that carried its trunk.
            self.progress.start(trial.trial_id, trial.config["trial"]["flops"])
            _say(self.progress.line(time.time()))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # Reports carry the tokens D trained so far; C = D x the cell's FLOPs per token.
            if result.get("tokens") is not None:
                t = trial.config["trial"]
                self.progress.report(trial.trial_id, result["tokens"] * t["cell"]["flops_per_token"] - t["skip_flops"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            trained = trained_flops(cells_dir, trial.config["trial"]["cell"])
            self.progress.close(trial.trial_id, None if trained is None else trained - trial.config["trial"]["skip_flops"])
            _say(self.progress.line(time.time()))

        on_trial_error = on_trial_complete

    return SweepProgress()
