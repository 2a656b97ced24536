"""Sweep overhead: how much of a sweep's wall time is spent training?

    python bench/bench_sweep.py            # llm-ray's settings
    python bench/bench_sweep.py --naive    # the same sweep with Ray's defaults, for comparison
    python bench/bench_sweep.py --both     # both, side by side in one run

Runs a small IsoFLOP sweep (6 cells, ~70-190 s of training each on 2 CPU cores: the issue's target is
utilisation >= 0.8 for trials of >= 60 s) and prints, per trial,
the fixed overhead (trial launch -> first optimizer step, last step -> trial end), the sum of
train-step time, and utilisation = sum of train-step time / (sweep wall time x concurrent slots).

`--naive` undoes what llm-ray does about overhead: Ray Train's default 2 s controller poll, every
cell on 2 sharded Ray Train workers one trial at a time (none in-process), and the matmul peak
measured in every trial.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SWEEP = ["sweep.name=bench", "sweep.budgets=[1e12,1.6e12]", "sweep.sizes=[3.3e4,8.7e4,1.4e5]",
         "sweep.tokens_per_param=[0.1,5000]", "fit.predict_flops=[1e13]", "fit.n_bootstrap=50", "sweep.validate_factor=0",
         "wandb.mode=disabled"]
NAIVE = ["sweep.max_concurrent_trials=1", "sweep.shard_above_params=0", "sweep.train_in_process=false",
         "trainer.num_workers=2",
         "trainer.global_batch_tokens=4096", "trainer.peak_flops=null"]


def run(label: str, extra: list[str], env_extra: dict) -> dict:
    storage = tempfile.mkdtemp(prefix=f"llm-ray-bench-{label}-")
    env = {**os.environ, **env_extra}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "llm_ray.sweep", *SWEEP, *extra,
                           f"trainer.storage_path={storage}", f"hydra.run.dir={storage}/hydra"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"{label} sweep failed")
    return summarize(label, os.path.join(storage, "bench"), wall)


def summarize(label: str, sweep_dir: str, wall: float) -> dict:
    import json

    cells = sorted(os.listdir(os.path.join(sweep_dir, "cells")))
    rows, starts, ends = [], [], []
    slots = 0
    for c in cells:
        d = os.path.join(sweep_dir, "cells", c)
        rec = json.load(open(os.path.join(d, "result.json")))
        trial = json.load(open(os.path.join(d, "trial.json")))
        starts.append(trial["t_trial_start"])
        ends.append(trial["t_trial_end"])
        rows.append((c, rec["world_size"], rec["t_first_step"] - trial["t_trial_start"],
                     trial["t_trial_end"] - rec["t_last_step"], rec["train_time_s"]))
    # Concurrent slots: the most trials that overlapped in time.
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends])
    live = 0
    for _, delta in events:
        live += delta
        slots = max(slots, live)
    train = sum(r[4] for r in rows)
    span = max(ends) - min(starts)
    print(f"\n== {label}: {len(rows)} trials, up to {slots} at a time, sweep wall {wall:.0f} s "
          f"(trials span {span:.0f} s)")
    print(f"{'cell':34} {'workers':>7} {'launch->1st step':>16} {'last step->end':>14} {'train steps':>11}")
    for c, w, pre, post, tr in rows:
        print(f"{c:34} {w:7d} {pre:15.1f}s {post:13.1f}s {tr:10.1f}s")
    mean_pre = sum(r[2] for r in rows) / len(rows)
    mean_post = sum(r[3] for r in rows) / len(rows)
    util = train / (wall * slots)
    util_span = train / (span * slots)
    print(f"mean fixed overhead per trial: {mean_pre:.1f} s before + {mean_post:.1f} s after; "
          f"sum of train-step time {train:.0f} s")
    print(f"utilisation = train-step time / (sweep wall x {slots} slots) = {util:.2f} "
          f"(over the trials' span, without plan/data/fit: {util_span:.2f})")
    return {"label": label, "util": util, "util_span": util_span, "pre": mean_pre, "post": mean_post,
            "wall": wall, "train": train}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive", action="store_true")
    ap.add_argument("--both", action="store_true")
    args = ap.parse_args()
    results = []
    if args.naive or args.both:
        results.append(run("naive", NAIVE, {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
                                            "RAY_TRAIN_ENABLE_PRINT_PATCH": "1"}))
    if not args.naive:
        results.append(run("llm-ray", [], {}))
    if len(results) == 2:
        a, b = results
        print(f"\nllm-ray / naive: utilisation {b['util']:.2f} / {a['util']:.2f} = {b['util'] / a['util']:.2f}x; "
              f"sweep wall {a['wall']:.0f} s -> {b['wall']:.0f} s")


if __name__ == "__main__":
    main()
