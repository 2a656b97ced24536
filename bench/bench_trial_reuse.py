"""A sweep with its Tune trial processes reused (llm-ray's setting) against a new process per trial.

    python bench/bench_trial_reuse.py [--budgets 5e10,1.5e11] [override ...]   # e.g. model=llama

The smoke grid (3 sizes x the given budgets, 1-worker cells in their trial's process, as many at a
time as the machine has slots) trained twice in one run, each sweep in its own process and its own
local Ray: once as llm-ray runs it (Tune's reuse_actors: a cell starts in a process that has torch and
DeepSpeed loaded, after DeepSpeed's cache of the last cell's process group is dropped), once with
reuse_actors forced off (a new process, and its imports, per cell: how llm-ray ran before). Prints
each sweep's wall time, the sum of its trials' times and the cells whose final losses differ (there
should be none: the same cells, the same seeds). Last line: name=value.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The sweep command as `python -m llm_ray.sweep` runs it; for "fresh" Tune's TuneConfig is wrapped first.
DRIVER = """
import sys
from ray import tune
if sys.argv[1] == "fresh":
    config = tune.TuneConfig
    tune.TuneConfig = lambda **kw: config(**{**kw, "reuse_actors": False})
sys.argv = ["llm_ray.sweep", *sys.argv[2:]]
from llm_ray.sweep import main
main()
"""


def sweep(label: str, budgets: str, overrides: list) -> dict:
    storage = tempfile.mkdtemp(prefix=f"llm-ray-bench-reuse-{label}-")
    args = ["sweep=smoke", f"sweep.budgets=[{budgets}]", "fit.n_bootstrap=20", "wandb.mode=disabled",
            f"trainer.storage_path={storage}", f"hydra.run.dir={storage}/hydra", *overrides]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", DRIVER, label, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise SystemExit(f"{label} sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cells = os.path.join(storage, "smoke", "cells")
    trials = {c: json.load(open(os.path.join(cells, c, "trial.json"))) for c in os.listdir(cells)}
    losses = {c: json.load(open(os.path.join(cells, c, "result.json")))["final_val_loss"] for c in trials}
    return {"wall": wall, "trial_s": sum(t["t_trial_end"] - t["t_trial_start"] for t in trials.values()),
            "processes": len({t["pid"] for t in trials.values()}), "losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="5e10,1.5e11")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides for both sweeps")
    args = ap.parse_args()
    runs = {label: sweep(label, args.budgets, args.overrides) for label in ("reused", "fresh")}
    for label, r in runs.items():
        print(f"{label:7s} {len(r['losses'])} cells in {r['processes']} trial processes: sweep wall {r['wall']:.1f} s, "
              f"trials {r['trial_s']:.1f} s")
    differ = [c for c, v in runs["reused"]["losses"].items() if runs["fresh"]["losses"].get(c) != v]
    print(f"cells whose final val loss differs between the two: {differ or 'none'}")
    print(f"reused_wall_s={runs['reused']['wall']:.1f} fresh_wall_s={runs['fresh']['wall']:.1f} "
          f"speedup={runs['fresh']['wall'] / runs['reused']['wall']:.2f} losses_differ={len(differ)}")


if __name__ == "__main__":
    main()
