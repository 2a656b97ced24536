"""A Tune callback that prints cells done / running / pending and an ETA from the FLOPs done."""

from __future__ import annotations

import time


def _say(message: str) -> None:
    """Print, looked up at call time: Tune pickles its callbacks, and Ray may have replaced
    builtins.print by then, so the callback must not hold the print function itself."""
    print(message, flush=True)


def make_progress_callback(total_cells: int, already_done: int, flops_total: float):
    from ray import tune

    class SweepProgress(tune.Callback):
        def __init__(self):
            self.t0 = time.time()
            self.running, self.done, self.flops_done = set(), 0, 0.0

        def _print(self):
            pending = total_cells - already_done - self.done - len(self.running)
            elapsed = time.time() - self.t0
            eta = (elapsed / self.flops_done * (flops_total - self.flops_done)
                   if self.flops_done else float("nan"))
            _say(f"sweep: {already_done + self.done}/{total_cells} cells done, {len(self.running)} running,"
                 f" {pending} pending; elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min")

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._print()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.done += 1
            self.flops_done += trial.config["trial"]["cell"]["budget"]
            self._print()

        on_trial_error = on_trial_complete

    return SweepProgress()
