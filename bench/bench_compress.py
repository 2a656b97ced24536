"""Benchmark of the compression stage on a finished sweep, both sides in one run:

1. the stage as `python -m llm_ray.compress` runs it (one Ray task per (cell, setting), the cluster's
   CPUs less one at a time), on a scratch copy of the sweep with no measurement yet, so every pair is
   evaluated; target: the default sweep's cells within 5 minutes on 2 CPU cores;
2. the naive baseline: the same (cell, setting) pairs in a plain serial loop in this process (no Ray),
   each reloading the weights and measuring the loss the same way, on `--naive-cells` cells before
   and again after the stage (a shared machine's load drifts: the ratio is against their mean),
   extrapolated per evaluation to all cells.

Prints the time per cell and per method (from each evaluation's own timing), both walls and their ratio.
The stage's wall includes Ray's start, the fit of the degradation laws, the plots and the report.

    python bench/bench_compress.py --sweep-dir runs/isoflop [--naive-cells 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llm_ray.core.compression import CompressConfig, settings  # noqa: E402
from llm_ray.core.config import ResourcesConfig, WandbConfig  # noqa: E402


def scratch_copy(sweep_dir: str, dest: str) -> str:
    """The sweep's records and weights without any compression result (nothing of it is modified)."""
    skip = shutil.ignore_patterns("compress", "compress*", "tune", "checkpoint_*", "*.png", "wandb")
    out = os.path.join(dest, os.path.basename(sweep_dir.rstrip("/")))
    shutil.copytree(sweep_dir, out, ignore=skip)
    return out


def naive(cells, todo, out_dir: str) -> float:
    """Serial, in this process: every pair one after the other, no Ray."""
    import torch

    from llm_ray.stages.compress import evaluate_setting

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for c in cells:
        for s in todo:
            evaluate_setting(c.run_dir, dataclasses.asdict(s), os.path.join(out_dir, c.cell_id, s.setting_id + ".json"))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep-dir", default="runs/isoflop", help="a finished sweep with saved weights")
    ap.add_argument("--naive-cells", type=int, default=4, help="cells in the serial baseline (0: all)")
    args = ap.parse_args()

    from llm_ray.stages.compress import compress_sweep, finished_cells

    cfg = CompressConfig()
    todo = settings(cfg)
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        sweep_dir = scratch_copy(os.path.abspath(args.sweep_dir), tmp)
        cells = finished_cells(sweep_dir)[0]
        print(f"{len(cells)} cells x {len(todo)} settings = {len(cells) * len(todo)} evaluations, {os.cpu_count()} CPUs")
        subset = cells[:args.naive_cells or len(cells)]
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        naive_before = naive(subset, todo, os.path.join(tmp, "naive-before"))
        t0 = time.perf_counter()
        run = compress_sweep(sweep_dir, cfg, wandb_cfg=WandbConfig(mode="disabled"), resources=ResourcesConfig(),
                             log=lambda *a: None)
        stage_wall = time.perf_counter() - t0
        naive_after = naive(subset, todo, os.path.join(tmp, "naive-after"))
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    t = run.table.assign(total_s=run.table["load_s"] + run.table["eval_s"])
    print("\nper cell (s, all settings; load = weights + held-out windows, eval = compress + forward):")
    per_cell = t.groupby("cell_id", sort=False).agg(params=("params", "first"), load_s=("load_s", "sum"),
                                                   eval_s=("eval_s", "sum"))
    print(per_cell.to_string(float_format=lambda x: f"{x:.2f}"))
    print("\nper method (s per evaluation, mean over cells):")
    print(t.groupby("label", sort=False)[["load_s", "eval_s"]].mean().to_string(float_format=lambda x: f"{x:.3f}"))
    per_eval = [w / (len(subset) * len(todo)) for w in (naive_before, naive_after)]
    naive_all = sum(per_eval) / 2 * len(t)
    print(f"\nstage (Ray tasks): {stage_wall:.1f} s wall for {len(t)} evaluations "
          f"(their own time: {t['total_s'].sum():.1f} s; target <= 300 s)")
    print(f"naive serial loop: {per_eval[0]:.3f} s / {per_eval[1]:.3f} s per evaluation before / after the stage "
          f"({len(subset)} cells), extrapolated to all {len(t)}: {naive_all:.1f} s")
    print(f"ratio naive / stage: {naive_all / stage_wall:.2f}")

if __name__ == "__main__":
    main()
