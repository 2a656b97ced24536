"""Sweep cells against a plain eager PyTorch loop, and how much of a sweep's wall time is training.

    python bench/bench_sweep.py            # the default sweep's 3 smallest shapes: sweep cells vs plain eager
    python bench/bench_sweep.py --naive    # the overhead sweep with Ray's defaults
    python bench/bench_sweep.py --both     # the overhead sweep both ways, side by side in one run

Default: a sweep of the embedded default's three smallest shapes at one small budget (llm-ray's
settings: 1-worker cells in their Tune trial's process, as many at a time as there are cores), then
the plain loop of bench/plain_loop.py on each cell's exact shape, batch and optimizer, with every
core (torch's default threads: what a user running cells one after another would do), twice per
shape right after the sweep and averaged. Prints per shape the cell's
tokens/s against the plain loop's, and the aggregate: the cells' tokens over the trials' span against
the same tokens trained one cell after another by the plain loop. Last line: the ratios, name=value.
Tokens/s counts optimizer-step time on both sides; the plain loop samples random tokens of the
cell's vocabulary (a step's cost does not depend on which tokens).

`--naive`/`--both`: a 6-cell sweep (~70-190 s of training a cell) printing, per trial, the fixed
overhead (trial launch -> first optimizer step, last step -> trial end), the sum of train-step time,
and utilisation = train-step time / (sweep wall x concurrent slots). `--naive` undoes what llm-ray
does about overhead: Ray Train's default 2 s controller poll, every cell on 2 sharded Ray Train
workers one trial at a time (none in-process), and the matmul peak measured in every trial.
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


def run(label: str, extra: list[str], env_extra: dict, sweep: list[str] = SWEEP) -> dict:
    storage = tempfile.mkdtemp(prefix=f"llm-ray-bench-{label}-")
    env = {**os.environ, **env_extra}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "llm_ray.sweep", *sweep, *extra,
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
            "wall": wall, "train": train, "span": span, "sweep_dir": sweep_dir}


def smallest_shapes_sweep() -> list[str]:
    """The default sweep's three smallest sizes at a budget small enough for a few minutes."""
    from llm_ray.core.plan import SweepConfig

    sizes = sorted(float(n) for n in SweepConfig().sizes)[:3]
    return ["sweep.name=bench", "sweep.budgets=[5e10]", f"sweep.sizes=[{','.join(f'{n:g}' for n in sizes)}]",
            "sweep.replicate_minima=0", "sweep.validate_factor=0", "fit.n_bootstrap=0", "fit.plots=false",
            "wandb.mode=disabled"]


def plain_tokens_per_s(record: dict, steps: int) -> float:
    """The plain loop (every core) on a finished cell's model, batch and optimizer: tokens/s over
    steps 3..`steps`."""
    import numpy as np

    from llm_ray.core.config import ModelConfig, TrainerConfig
    from plain_loop import plain_step_seconds

    model = ModelConfig(**record["model"])
    known = set(TrainerConfig.__dataclass_fields__)
    trainer = TrainerConfig(**{k: v for k, v in record["job"]["trainer"].items() if k in known})
    tokens = np.random.default_rng(0).integers(0, model.vocab_size, size=2_000_000, dtype=np.int64)
    measured = plain_step_seconds(model, trainer, tokens, steps, os.cpu_count() or 1)[2:]
    return trainer.global_batch_tokens * len(measured) / sum(measured)


def cells_vs_plain(steps: int) -> None:
    import json

    result = run("llm-ray", [], {}, sweep=smallest_shapes_sweep())
    cells_dir = os.path.join(result["sweep_dir"], "cells")
    records = sorted((json.load(open(os.path.join(cells_dir, c, "result.json"))) for c in os.listdir(cells_dir)),
                     key=lambda r: r["params"])
    print(f"\n== sweep cells (1 thread each, {os.cpu_count()} at a time) vs the plain loop ({os.cpu_count()} "
          f"threads, one cell at a time; mean of two runs)")
    print(f"{'cell':34} {'N':>7} {'cell tok/s':>10} {'plain tok/s':>11} {'ratio':>6}")
    ratios, plain_seconds = {}, 0.0
    for r in records:
        plain = (plain_tokens_per_s(r, steps) + plain_tokens_per_s(r, steps)) / 2
        ratios[f"cell_vs_plain_N{r['params']}"] = r["tokens_per_s"] / plain
        plain_seconds += r["tokens"] / plain
        print(f"{r['run_id']:34} {r['params']:7d} {r['tokens_per_s']:10.0f} {plain:11.0f} "
              f"{r['tokens_per_s'] / plain:6.2f}", flush=True)
    tokens = sum(r["tokens"] for r in records)
    ratios["sweep_vs_plain_aggregate"] = plain_seconds / result["span"]
    print(f"aggregate: {tokens / 1e6:.1f}M tokens in the trials' span of {result['span']:.0f} s (start-up, evaluation "
          f"and all) against {plain_seconds:.0f} s of the plain loop's steps alone, one cell after another")
    print(" ".join(f"{k}={v:.2f}" for k, v in ratios.items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive", action="store_true")
    ap.add_argument("--both", action="store_true")
    ap.add_argument("--plain-steps", type=int, default=40, help="plain-loop steps per measurement")
    args = ap.parse_args()
    if not (args.naive or args.both):
        cells_vs_plain(args.plain_steps)
        return
    results = [run("naive", NAIVE, {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0", "RAY_TRAIN_ENABLE_PRINT_PATCH": "1"})]
    if args.both:
        results.append(run("llm-ray", [], {}))
        a, b = results
        print(f"\nllm-ray / naive: utilisation {b['util']:.2f} / {a['util']:.2f} = {b['util'] / a['util']:.2f}x; "
              f"sweep wall {a['wall']:.0f} s -> {b['wall']:.0f} s")


if __name__ == "__main__":
    main()
