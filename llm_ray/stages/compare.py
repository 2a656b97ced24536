"""Compare two finished sweeps by their laws: what variant B is worth in variant A's compute.

    read      through SweepDir: each sweep's results (its own cells, never held-out runs), fit.json
              and one finished run's record (what it trained on: corpus, evaluation split, tokenizer)
    check     the same corpus and evaluation documents (else refused); the same tokenizer, or bits
              per byte (a token of one vocabulary is not a token of the other)
    compare   llm_ray.fitting.compare: the multiplier k(C) at every budget, its trend with C and its
              value at the target budgets, each with a bootstrap interval; N_opt's shift; E's shift
    write     compare.json (CompareRecord), compare.md, compare.png and a W&B table
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from llm_ray.core.comparison import BudgetMultiplier, CompareConfig, CompareRecord, FloorShift, TargetMultiplier
from llm_ray.core.records import FitRecord, RunRecord
from llm_ray.fitting.compare import Comparison, SweepPoints, compare_sweeps, trend_verdict
from llm_ray.io import storage

TOKENIZER_FIELDS = ("vocab_size", "tokenizer_sample_bytes", "token_dtype", "task_bytes", "shard_tokens",
                    "ray_min_bytes", "cache_dir")
"""Data settings that change the tokens but not the documents (nor which of them are held out)."""


class SweepInput(NamedTuple):
    """What the comparison reads of one sweep directory."""

    sweep_dir: str
    name: str
    table: pd.DataFrame
    """The rows the sweep's law is fitted on (role `sweep`)."""
    fit: FitRecord
    run: RunRecord
    """A finished cell's record: its training config (`job`) and prepared data (`data`)."""


def read_sweep(sweep_dir: str) -> SweepInput:
    """One sweep directory, read through SweepDir: its fitted rows, fit.json and a finished cell's record."""
    from llm_ray.io.sweepdir import FIT, PLAN, RESULTS, SweepDir

    sweep = SweepDir(sweep_dir)
    for needed in (RESULTS, FIT, PLAN):
        sweep.require(needed)
    finished = [c.record for c in sweep.cells(status="ok", need="compare") if c.record.job is not None]
    if not finished:
        raise ValueError(f"sweep_dirs: {sweep.url!r} has no finished cell that records its training config: run "
                         f"the sweep (python -m llm_ray.sweep) with this llm-ray.")
    return SweepInput(sweep.url, sweep.group, sweep.fitted(), sweep.fit, finished[0])


def evaluation_set(run: RunRecord) -> dict:
    """What decides the held-out documents: the data config without its tokenizer settings, and the
    split's document counts (the same settings over changed files give other documents)."""
    cfg = {k: v for k, v in dataclasses.asdict(run.job.data).items() if k not in TOKENIZER_FIELDS}
    return {**cfg, "n_val_docs": run.data.get("n_val_docs"), "n_train_docs": run.data.get("n_train_docs")}


def check_same_evaluation(a: SweepInput, b: SweepInput) -> None:
    ea, eb = evaluation_set(a.run), evaluation_set(b.run)
    differ = {k: (ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)}
    if differ:
        what = "; ".join(f"{k}: {va!r} vs {vb!r}" for k, (va, vb) in differ.items())
        raise ValueError(f"sweep_dirs: {a.name} and {b.name} were evaluated on different data ({what}): their losses "
                         f"are not comparable; compare sweeps trained and evaluated on the same corpus and split.")


def choose_metric(a: SweepInput, b: SweepInput, metric: str) -> str:
    """`loss` when both sweeps tokenized alike (the same data entry key), else `bpb` if both have it."""
    same_tokens = a.run.data_key is not None and a.run.data_key == b.run.data_key
    without_bpb = [s.name for s in (a, b) if "bpb" not in s.table or not s.table["bpb"].notna().any()]
    entries = f"data entries {a.run.data_key} and {b.run.data_key}"
    if metric == "loss" and not same_tokens:
        raise ValueError(f"compare.metric=loss: {a.name} and {b.name} were tokenized differently ({entries}), so "
                         f"nats per token differ in unit; use compare.metric=bpb (or auto).")
    if metric == "bpb" or (metric == "auto" and not same_tokens):
        if without_bpb:
            why = f"were tokenized differently ({entries})" if not same_tokens else "are asked for in bits per byte"
            raise ValueError(f"{a.name} and {b.name} {why} and "
                             f"{' and '.join(without_bpb)} recorded no bits per byte (a `bpb` column in results): a "
                             f"loss per token is not comparable across tokenizers; re-run their results with a "
                             f"version of llm-ray that records bpb.")
        return "bpb"
    return "loss"


def sweep_points(s: SweepInput, metric: str) -> SweepPoints:
    """The final evaluation of every run that finished ok, in the chosen metric."""
    final = s.table[s.table["final"] & (s.table["status"] == "ok")]
    final = final[np.isfinite(final[metric].astype(float)) & (final["params"] > 0)]
    return SweepPoints.from_arrays(final["flops"], final["params"], final[metric], final["budget"])


def floor_shift(a: FitRecord, b: FitRecord) -> FloorShift:
    """E of each sweep's approach 3; identified when both intervals stay above 0 and are narrower than E."""
    fa, fb = a.approach("approach3"), b.approach("approach3")

    def known(x) -> bool:
        ci = x.ci.get("E")
        return x.ok and x.E is not None and ci is not None and ci[0] > 0 and ci[1] - ci[0] < x.E

    identified = known(fa) and known(fb)
    note = "" if identified else ("E is not identified in both sweeps (approach 3 skipped, or its interval reaches 0 "
                                  "or is wider than E): the sweeps reach too little of the floor to tell it apart")
    return FloorShift(e_a=fa.E if fa.ok else None, e_a_ci=fa.ci.get("E"), e_b=fb.E if fb.ok else None,
                      e_b_ci=fb.ci.get("E"), identified=identified, note=note)


def to_record(result: Comparison, a: SweepInput, b: SweepInput, labels: tuple, metric: str, cfg: CompareConfig,
              floor: Optional[FloorShift]) -> CompareRecord:
    rows = tuple(BudgetMultiplier(flops=r.flops, in_a=r.in_a, in_b=r.in_b, b_measured=r.b_measured, in_trend=r.in_trend,
                                  k=r.k.value, k_ci=r.k.ci, n_opt_ratio=r.n_opt_ratio.value if r.n_opt_ratio else None,
                                  n_opt_ratio_ci=r.n_opt_ratio.ci if r.n_opt_ratio else None,
                                  loss_a=r.loss_a, loss_b=r.loss_b) for r in result.budgets)
    targets = tuple(TargetMultiplier(flops=c, k=k.value, k_ci=k.ci, n_opt_ratio=n.value, n_opt_ratio_ci=n.ci)
                    for (c, k), (_, n) in zip(result.targets, result.n_opt_law_ratio))
    centre_c, centre = result.centre
    notes = result.notes + tuple(f"C = {r.flops:.3g}: B measured no minimum here; k is the trend's"
                                 for r in rows if not r.b_measured)
    notes += tuple(f"C = {r.flops:.3g}: B's loss lies outside A's measured frontier (A's frontier extrapolated); "
                   f"left out of the trend" for r in rows if r.b_measured and not r.in_trend)
    return CompareRecord(labels=labels, sweep_dirs=(a.sweep_dir, b.sweep_dir), metric=metric, budgets=rows,
                         slope=result.slope.value, slope_ci=result.slope.ci, trend=trend_verdict(result.slope),
                         centre_flops=centre_c, centre_k=centre.value, centre_ci=centre.ci, targets=targets,
                         trend_band=tuple((c, k.value, *(k.ci or (None, None))) for c, k in result.band),
                         floor=floor, frontier_a=result.frontier_a, ci_level=cfg.ci_level, n_resamples=cfg.n_resamples,
                         resample=cfg.resample, residual_dof=result.residual_dof, notes=notes)


def compare_dirs(sweep_dirs: list, cfg: CompareConfig, log=print) -> CompareRecord:
    """Read, check and compare two sweep directories (nothing written)."""
    if len(sweep_dirs) != 2:
        raise ValueError(f"sweep_dirs={list(sweep_dirs)}: give two sweep directories, A (the baseline) and B "
                         f"(the variant), e.g. sweep_dirs=[/abs/runs/base,/abs/runs/variant].")
    a, b = (read_sweep(storage.to_local_or_url(str(d))) for d in sweep_dirs)
    check_same_evaluation(a, b)
    metric = choose_metric(a, b, cfg.metric)
    labels = tuple(cfg.labels) or (a.name, b.name)
    pa, pb = sweep_points(a, metric), sweep_points(b, metric)
    targets = list(cfg.target_flops) or [10 * float(max(pa.flops.max(), pb.flops.max()))]
    log(f"compare: {labels[0]} ({len(pa.loss)} runs, {pa.n_groups} budgets) vs {labels[1]} ({len(pb.loss)} runs, "
        f"{pb.n_groups} budgets) in {'bits per byte' if metric == 'bpb' else 'held-out loss'}")
    run_cfg = CompareConfig(**{**cfg.__dict__, "target_flops": [float(t) for t in targets]})
    result = compare_sweeps(pa, pb, run_cfg)
    floor = floor_shift(a.fit, b.fit) if metric == "loss" else None
    return to_record(result, a, b, labels, metric, run_cfg, floor)


def run_compare(sweep_dirs: list, cfg: CompareConfig, out_dir: str, wandb_cfg=None, log=print) -> CompareRecord:
    """compare.json, compare.md and compare.png in `out_dir`, and a W&B table; returns the record."""
    from llm_ray.reporting.compare import compare_markdown, compare_png, headline, log_compare_table

    record = compare_dirs(sweep_dirs, cfg, log)
    storage.write_json(storage.join(out_dir, "compare.json"), record.to_json())
    storage.write_bytes_atomic(storage.join(out_dir, "compare.md"), compare_markdown(record).encode())
    storage.write_bytes_atomic(storage.join(out_dir, "compare.png"), compare_png(record))
    if wandb_cfg is not None:
        log_compare_table(wandb_cfg, record)
    log(headline(record))
    return record

