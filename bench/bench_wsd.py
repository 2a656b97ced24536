"""One run, many token counts: the same IsoFLOP grid as independent cosine runs and as WSD branches.

    python bench/bench_wsd.py                      # the default grid: 4 sizes x 7 budgets, 1.5 decades of C
    python bench/bench_wsd.py --out /abs/dir       # keep both sweeps (default: a temporary directory)
    python bench/bench_wsd.py --order wsd,cosine   # which sweep runs first

Both sweeps run in this one invocation, one after the other, each as `python -m llm_ray.sweep` on its
own local Ray (2 CPU cores: 2 in-process cells at a time): `sweep.schedule=independent` with
`trainer.schedule=cosine` (every cell from scratch, DeepSpeed's WarmupCosineLR to 10% of the lr)
against `sweep.schedule=wsd_branches` (per size one constant-lr trunk carried by its longest cell,
every other cell a 20% (1-sqrt) cooldown to zero branched from the trunk's checkpoint; Hägele et al.
2024). Printed: the FLOPs each spent (planned, and counted from the runs' records) and their ratio
(target <= 0.6), wall and CPU time and their ratio (target <= 0.7), each cell's final validation
loss both ways (target: WSD within 1% of its cosine twin, or lower), both fits' a, b, E with their
intervals and whether the exponents lie inside each other's intervals, and the load average the
machine was under. bench_wsd.png draws both IsoFLOP sets on one axis.

Why 7 budgets per size: branching saves per size (0.8 D_max + 0.2 sum D) / sum D with 20%
cooldowns, and on geometric budgets the longest run dominates sum D: 5 budgets over 1.5 decades
save only to 0.67x, 7 to 0.56x (llm_ray.core.branches). Why these budgets: each trial costs a fixed
~10 s of process start, imports and set-up on top of its training, the same under both schedules;
the wall-time ratio approaches the FLOPs ratio only when training dominates that overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from llm_ray.core.records import FitRecord  # noqa: E402
from llm_ray.reporting.text import with_interval  # noqa: E402

BUDGETS = [round(3e10 * 10 ** (k / 4), -8) for k in range(7)]  # 3e10 .. 9.5e11: 1.5 decades, 7 per size
SIZES = [6.9e3, 1.7e4, 4.6e4, 8.7e4]
GRID = ["sweep.name={name}", f"sweep.budgets=[{','.join(f'{b:.3g}' for b in BUDGETS)}]",
        f"sweep.sizes=[{','.join(f'{n:.3g}' for n in SIZES)}]", "sweep.tokens_per_param=[0.3,3000]",
        "sweep.warmup_rule=fixed", "sweep.validate_factor=0", "sweep.stages=[]",
        "trainer.warmup_steps=10", "trainer.cooldown_fraction=0.2", "trainer.cooldown_shape=1-sqrt",
        "fit.predict_flops=[1e13]", "fit.n_bootstrap=200", "wandb.mode=disabled"]
SCHEDULES = {"cosine": ["sweep.schedule=independent", "trainer.schedule=cosine"],
             "wsd": ["sweep.schedule=wsd_branches"]}


def run_sweep(label: str, out: str) -> dict:
    """One sweep as its own process: wall, CPU of its reaped process tree, load before and after."""
    args = [sys.executable, "-m", "llm_ray.sweep", *[a.format(name=label) for a in GRID], *SCHEDULES[label],
            f"trainer.storage_path={out}", f"hydra.run.dir={out}/hydra-{label}"]
    load0, cpu0 = os.getloadavg(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.path.join(out, f"{label}.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"the {label} sweep failed (log: {out}/{label}.log)")
    plan_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FLOPs to spend", " " * 31 + "wsd"))]
    return {"label": label, "dir": os.path.join(out, label), "wall": wall, "load": (load0[0], os.getloadavg()[0]),
            "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), "plan_lines": plan_lines}


def spent(sweep_dir: str) -> dict:
    """FLOPs the sweep's runs trained themselves (a branch: only its cooldown), from their records."""
    total, runs, seconds = 0.0, 0, 0.0
    cells = os.path.join(sweep_dir, "cells")
    for c in os.listdir(cells):
        rec = json.load(open(os.path.join(cells, c, "result.json")))
        start = rec.get("resumed_from_step") or 0
        total += rec["flops_exact"] * (1 - start / rec["steps"])
        seconds += rec["train_time_s"] - sum(h.get("step_time_s", 0.0) for h in rec["history"] if h["step"] <= start)
        runs += 1
    return {"flops": total, "runs": runs, "train_s": seconds}


def finals(sweep_dir: str) -> pd.DataFrame:
    df = pd.read_parquet(os.path.join(sweep_dir, "results.parquet"))
    df = df[df["final"] & (df["role"] == "sweep")]
    return df.set_index("run_id")[["budget", "params", "tokens", "loss", "status"]]


def compare_cells(cos: pd.DataFrame, wsd: pd.DataFrame) -> pd.DataFrame:
    both = cos.join(wsd[["loss", "status"]], lsuffix="_cos", rsuffix="_wsd", how="outer")
    both["diff_pct"] = 100 * (both["loss_wsd"] / both["loss_cos"] - 1)
    return both.sort_values(["budget", "params"])


def fit_lines(label: str, fit: FitRecord) -> list[str]:
    a3, a2 = fit.approach("approach3"), fit.approach("approach2")
    return [f"  {label:6} approach 3: a = {with_interval(a3.a, a3.ci.get('a'))}, b = {with_interval(a3.b, a3.ci.get('b'))}, "
            f"E = {with_interval(a3.E, a3.ci.get('E'))}, alpha = {with_interval(a3.alpha, a3.ci.get('alpha'))}, "
            f"beta = {with_interval(a3.beta, a3.ci.get('beta'))}",
            f"  {label:6} approach 2: a = {with_interval(a2.a, a2.ci.get('a'))}, b = {with_interval(a2.b, a2.ci.get('b'))}"]


def inside(x, ci) -> bool:
    return x is not None and ci is not None and ci[0] <= x <= ci[1]


def exponents_agree(f1: FitRecord, f2: FitRecord) -> list[str]:
    out = []
    for name in ("approach3", "approach2"):
        p, q = f1.approach(name), f2.approach(name)
        for k in ("a", "b"):
            ok = inside(getattr(p, k), q.ci.get(k)) and inside(getattr(q, k), p.ci.get(k))
            out.append(f"  {name} {k}: each inside the other's interval: {'yes' if ok else 'NO'}")
    return out


def plot(cells: pd.DataFrame, path: str) -> None:
    import matplotlib.pyplot as plt

    from llm_ray.reporting.plots import png

    fig, ax = plt.subplots(figsize=(7.5, 5))
    budgets = sorted(cells["budget"].unique())
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    for b, colour in zip(budgets, colours):
        g = cells[cells["budget"] == b].sort_values("params")
        ax.plot(g["params"], g["loss_cos"], "-o", color=colour, ms=4, label=f"C = {b:.2g}")
        ax.plot(g["params"], g["loss_wsd"], "--x", color=colour, ms=5)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("final validation loss L (nats/token)")
    ax.set_title("IsoFLOP curves: cosine, each cell from scratch (solid, o)\n"
                 "vs WSD cooldown branches of one trunk per size (dashed, x)")
    ax.legend(fontsize=8, ncol=2)
    with open(path, "wb") as f:
        f.write(png(fig))


def report(runs: dict, out: str) -> None:
    cos, wsd = runs["cosine"], runs["wsd"]
    s_cos, s_wsd = spent(cos["dir"]), spent(wsd["dir"])
    print("\n== plan (printed by the sweep before anything trained)")
    print("\n".join(wsd["plan_lines"]))
    print("\n== measured")
    for r, s in ((cos, s_cos), (wsd, s_wsd)):
        print(f"  {r['label']:6}: {s['runs']} runs, {s['flops']:.4g} FLOPs trained, wall {r['wall']:.0f} s, "
              f"CPU {r['cpu']:.0f} s, train steps {s['train_s']:.0f} s, load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}")
    print(f"  WSD / cosine: FLOPs {s_wsd['flops'] / s_cos['flops']:.3f} (target <= 0.6), "
          f"wall {wsd['wall'] / cos['wall']:.3f} (target <= 0.7), CPU {wsd['cpu'] / cos['cpu']:.3f}, "
          f"train-step time {s_wsd['train_s'] / s_cos['train_s']:.3f}")
    cells = compare_cells(finals(cos["dir"]), finals(wsd["dir"]))
    print("\n== final validation loss per cell (WSD vs its cosine twin)")
    print(f"{'cell':16} {'N':>8} {'D':>9} {'cosine':>8} {'WSD':>8} {'diff':>7}")
    for run_id, r in cells.iterrows():
        flag = "" if r["diff_pct"] <= 1.0 else "  > +1%"
        print(f"{run_id:16} {r['params']:8.0f} {r['tokens']:9.3g} {r['loss_cos']:8.4f} {r['loss_wsd']:8.4f} "
              f"{r['diff_pct']:+6.2f}%{flag}")
    within = int((cells["diff_pct"] <= 1.0).sum())
    print(f"  {within}/{len(cells)} cells within 1% of cosine or lower; mean {cells['diff_pct'].mean():+.2f}%, "
          f"max {cells['diff_pct'].max():+.2f}%, min {cells['diff_pct'].min():+.2f}%")
    fits = {k: FitRecord.from_json(json.load(open(os.path.join(r["dir"], "fit.json")))) for k, r in runs.items()}
    print("\n== fits (90% bootstrap intervals)")
    for k in ("cosine", "wsd"):
        print("\n".join(fit_lines(k, fits[k])))
    print("\n".join(exponents_agree(fits["cosine"], fits["wsd"])))
    plot(cells, os.path.join(out, "bench_wsd.png"))
    cells.to_csv(os.path.join(out, "bench_wsd_cells.csv"))
    print(f"\nplot: {out}/bench_wsd.png; sweeps: {cos['dir']}, {wsd['dir']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="absolute directory for both sweeps (default: a new temporary one)")
    ap.add_argument("--order", default="cosine,wsd")
    ap.add_argument("--report-only", action="store_true", help="re-read finished sweeps in --out")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="llm-ray-bench-wsd-")
    os.makedirs(out, exist_ok=True)
    print(f"bench_wsd: {len(SIZES)} sizes x {len(BUDGETS)} budgets {BUDGETS[0]:.2g}..{BUDGETS[-1]:.2g} FLOPs, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; output {out}")
    runs = {}
    for label in args.order.split(","):
        if args.report_only:
            runs[label] = json.load(open(os.path.join(out, f"{label}.json")))
            continue
        runs[label] = run_sweep(label, out)
        json.dump(runs[label], open(os.path.join(out, f"{label}.json"), "w"))
        print(f"  {label}: wall {runs[label]['wall']:.0f} s")
    report(runs, out)


if __name__ == "__main__":
    main()
