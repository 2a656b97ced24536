"""The compression stage's files: compress.parquet, compress_fit.json, the plots, the report section
(compress.md, inlined by report.md) and the sweep's W&B `compress` run."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import tempfile

import numpy as np
import pandas as pd

from llm_ray.core.compression import BASELINE, CompressConfig, best_under, budget_ladder
from llm_ray.io import storage
from llm_ray.reporting.text import with_interval

ROWS_DIR = "compress"
"""<sweep_dir>/compress/<cell_id>/<setting_id>.json: one evaluated (cell, setting) each."""
TABLE = "compress.parquet"
LAWS = "compress_fit.json"
SECTION = "compress.md"
PLOTS = ("compress_delta.png", "compress_memory.png", "compress_sparsity.png")


def write_outputs(run, cfg: CompressConfig, *, wandb_cfg=None, log=print) -> None:
    """Every file of the stage, the report refreshed, and the W&B run (when wandb_cfg is given)."""
    from llm_ray.reporting.markdown import refresh_report

    sweep_dir, table = run.sweep_dir, run.table
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    storage.write_bytes_atomic(storage.join(sweep_dir, TABLE), buf.getvalue())
    storage.write_json(storage.join(sweep_dir, LAWS), {"config": dataclasses.asdict(cfg),
                                                       "laws": [law.to_json() for law in run.laws]})
    budgets = memory_budgets(table, cfg)
    images = {}
    if cfg.plots:
        from llm_ray.reporting.compress_plots import delta_png, memory_png, sparsity_png

        images = {"compress_delta.png": delta_png(table, run.laws, cfg.min_delta),
                  "compress_memory.png": memory_png(table, budgets), "compress_sparsity.png": sparsity_png(table)}
        images = {k: v for k, v in images.items() if v is not None}
        for name, data in images.items():
            storage.write_bytes_atomic(storage.join(sweep_dir, name), data)
    storage.write_bytes_atomic(storage.join(sweep_dir, SECTION), render_section(run, budgets, list(images)).encode())
    refresh_report(sweep_dir)
    log(f"compress: {storage.join(sweep_dir, TABLE)} ({len(table)} rows), {SECTION} in report.md, "
        f"{len(images)} plots")
    if wandb_cfg is not None:
        log_wandb(wandb_cfg, run, cfg, budgets, images)


def memory_budgets(table: pd.DataFrame, cfg: CompressConfig) -> list[float]:
    if cfg.memory_budgets:
        return sorted(float(b) for b in cfg.memory_budgets)
    return budget_ladder(float(table["bytes"].min()), float(table["bytes"].max()))


TIE_NATS = 1e-3
"""A compressed model within this of the best fp32 model that fits ties with it (int8 of the same cell)."""


def memory_answer(table: pd.DataFrame, budgets: list[float]) -> list[dict]:
    """Per budget: the lowest-loss (cell, setting) that fits, and the lowest-loss fp32 model that fits."""
    base = table[table["method"] == BASELINE].reset_index(drop=True)
    out = []
    for b in budgets:
        best = best_under(table["bytes"].tolist(), table["val_loss"].tolist(), b)
        dense = best_under(base["bytes"].tolist(), base["val_loss"].tolist(), b)
        out.append({"budget": b, "best": None if best is None else table.iloc[best],
                    "fp32": None if dense is None else base.iloc[dense]})
    return out


def kb(n: float) -> str:
    return f"{n / 1e3:.3g} kB" if n < 1e6 else f"{n / 1e6:.3g} MB"


def render_section(run, budgets: list[float], plots: list[str]) -> str:
    table = run.table
    lines = ["## Compression: loss after quantization and pruning", "",
             "Every finished cell's final weights, compressed after training and evaluated on the sweep's own "
             "held-out windows (quantized weights are dequantized for the forward pass: the loss is the "
             "quantized model's, no integer kernel runs). Model bytes as stored: bit-packed integer codes with "
             "one fp16 scale per group; pruned tensors as fp32 values plus one bit per weight.", ""]
    lines += answer_lines(memory_answer(table, budgets)) + int8_lines(table) + data_lines(run.laws)
    lines += law_table(run.laws) + delta_table(table)
    if run.skipped or run.failed:
        lines += [f"- not compressed: {cid} ({why})" for cid, why in run.skipped.items()]
        lines += [f"- evaluation failed (retried on the next run): {c} {s}: {e}" for (c, s), e in run.failed.items()]
        lines.append("")
    return "\n".join(lines + [f"![{p}]({p})" for p in plots]) + "\n"


def answer_lines(answers: list[dict]) -> list[str]:
    lines = ["**The memory-constrained answer.** For each model size in bytes, the (N, precision or sparsity) "
             "with the lowest validation loss among all cells that fit, against the best fp32 model that fits:", ""]
    return lines + [answer_line(a) for a in answers] + ["", answer_summary(answers), ""]


def answer_line(a: dict) -> str:
    best, dense = a["best"], a["fp32"]
    if best is None:
        return f"- **≤ {kb(a['budget'])}**: no model fits."
    text = (f"- **≤ {kb(a['budget'])}**: N = {best['params']:,} (C = {best['budget']:.3g}, D = {best['tokens']:.3g}) "
            f"at **{best['label']}** ({kb(best['bytes'])}): L = {best['val_loss']:.3f}")
    if best["method"] == BASELINE:
        return text + "; no compressed model does better."
    if dense is None:
        return text + "; no fp32 model fits."
    margin = dense["val_loss"] - best["val_loss"]
    tie = f", a tie: the same loss in {best['bytes'] / dense['bytes']:.0%} of its bytes" if margin < TIE_NATS else ""
    return text + (f"; the best fp32 model that fits, N = {dense['params']:,}, reaches {dense['val_loss']:.3f} "
                   f"({margin:+.3f} nats{tie}).")


def answer_summary(answers: list[dict]) -> str:
    """One sentence: where compression wins, and whether against an fp32 model that fits."""
    fits = [a for a in answers if a["best"] is not None]
    won = [a for a in fits if a["best"]["method"] != BASELINE]
    margins = [a["fp32"]["val_loss"] - a["best"]["val_loss"] for a in won if a["fp32"] is not None]
    beaten = [m for m in margins if m >= TIE_NATS]
    tied = len(margins) - len(beaten)
    if not won:
        return "At every budget the best model is an uncompressed one: compressing a bigger model never paid here."
    text = f"A compressed model is best at {len(won) - tied} of {len(fits)} budgets"
    parts = []
    if len(won) > len(margins):
        parts.append(f"at {len(won) - len(margins)} of them no fp32 model fits at all")
    if beaten:
        parts.append(f"at {len(beaten)} it beats the best fp32 model that fits by {min(beaten):.3f}-{max(beaten):.3f} "
                     f"nats: shrinking a bigger model beats training a smaller one there")
    if tied:
        parts.append(f"at {tied} it ties (within {TIE_NATS} nats) with the best fp32 model, which fits "
                     f"uncompressed: there compression only saves bytes")
    return text + ": " + "; ".join(parts) + "."


def int8_lines(table: pd.DataFrame) -> list[str]:
    int8 = table[(table["method"] == "rtn_channel") & (table["bits"] == 8)]
    if not len(int8):
        return []
    worst = int8.loc[int8["rel_delta"].idxmax()]
    met = "every cell is under 1%" if worst["rel_delta"] < 0.01 else f"NOT under 1% on {worst['cell_id']}"
    return [f"**int8 per-channel** costs at most {100 * worst['rel_delta']:.3f}% of the fp32 loss "
            f"(median {100 * int8['rel_delta'].median():.3f}%, {len(int8)} cells; {met}).", ""]


def data_lines(laws: list) -> list[str]:
    """Kumar et al.'s question: does Δloss grow with the data D a model of fixed N saw (gamma_D > 0)?"""
    lines = ["**Does over-training make compression worse here?** Kumar et al. 2024 found post-training "
             "quantization costs more the more tokens a model saw (gamma_D > 0 in δ = C D^γ_D / N^γ_N):", ""]
    for law in laws:
        if not law.ok or law.form != "power":
            continue
        ci = law.ci.get("gamma_D")
        verdict = ("no interval" if not ci else "Δloss grows with D" if ci[0] > 0 else "Δloss shrinks with D"
                   if ci[1] < 0 else "no dependence on D resolved (interval spans 0)")
        lines.append(f"- {law.name}: γ_D = {with_interval(law.params['gamma_D'], ci, '.2f')}, "
                     f"γ_N = {with_interval(law.params['gamma_N'], law.ci.get('gamma_N'), '.2f')}: {verdict}.")
    return lines + [""]


def law_table(laws: list) -> list[str]:
    level = int(round(100 * laws[0].level)) if laws else 90
    lines = [f"Degradation laws ({level}% bootstrap intervals over cells; points with Δ at or below the floor are "
             "not fitted):", "", "| fitted to | form | C | γ_D | γ_N | γ_post / b_S | points (left out) | rms log |",
             "|---|---|---|---|---|---|---|---|"]
    for law in laws:
        if not law.ok:
            lines.append(f"| {law.name} | {law.form} | skipped: {law.reason} | | | | {law.n_points} ({law.n_excluded}) | |")
            continue
        p, ci = law.params, law.ci
        extra = "gamma_post" if law.form == "ptq" else "b_S" if law.form == "sparsity" else None
        lines.append(f"| {law.name} | {law.form} | {with_interval(p['C'], ci.get('C'))} | "
                     f"{with_interval(p['gamma_D'], ci.get('gamma_D'), '.2f')} | "
                     f"{with_interval(p['gamma_N'], ci.get('gamma_N'), '.2f')} | "
                     f"{with_interval(p[extra], ci.get(extra), '.2f') if extra else ''} | "
                     f"{law.n_points} ({law.n_excluded}) | {law.rms_log:.2f} |")
    return lines + [""]


def delta_table(table: pd.DataFrame) -> list[str]:
    wide = table.pivot_table(index="cell_id", columns="label", values="delta_loss", sort=False)
    cells = table[table["method"] == BASELINE].sort_values(["budget", "params"])
    labels = [lab for lab in dict.fromkeys(table["label"]) if lab != "fp32"]
    lines = ["Δloss [nats] against each cell's fp32 loss:", "",
             "| C | N | D/N | fp32 L | " + " | ".join(labels) + " |", "|---" * (4 + len(labels)) + "|"]
    for r in cells.itertuples():
        deltas = [wide.at[r.cell_id, lab] if lab in wide.columns else math.nan for lab in labels]
        lines.append(f"| {r.budget:.3g} | {r.params:,} | {r.tokens_per_param:.1f} | {r.val_loss:.4f} | "
                     + " | ".join("" if math.isnan(d) else f"{d:+.4f}" for d in deltas) + " |")
    return lines + [""]


def log_wandb(wandb_cfg, run, cfg: CompressConfig, budgets: list[float], images: dict) -> None:
    from llm_ray.io.tracking import start_run

    group = wandb_cfg.group
    wb = start_run(wandb_cfg, name=f"{group}-compress", key="compress", job_type="compress",
                   config={"sweep": group, "compress": dataclasses.asdict(cfg)})
    if wb is None:
        return
    import wandb

    try:
        laws = wandb.Table(columns=["fitted_to", "form", "status", "parameter", "value", "ci_low", "ci_high"])
        for law in run.laws:
            for k, v in law.params.items():
                laws.add_data(law.name, law.form, law.status, k, v, *(law.ci.get(k) or (None, None)))
        answer = wandb.Table(columns=["budget_bytes", "params", "setting", "bytes", "val_loss", "fp32_params",
                                      "fp32_val_loss"])
        for a in memory_answer(run.table, budgets):
            best, dense = a["best"], a["fp32"]
            if best is not None:
                answer.add_data(a["budget"], int(best["params"]), best["label"], int(best["bytes"]),
                                float(best["val_loss"]), None if dense is None else int(dense["params"]),
                                None if dense is None else float(dense["val_loss"]))
        with tempfile.TemporaryDirectory() as tmp:
            pics = {}
            for name, data in images.items():
                open(os.path.join(tmp, name), "wb").write(data)
                pics[f"plots/{name[:-4]}"] = wandb.Image(os.path.join(tmp, name))
            wb.log({"compress": wandb.Table(dataframe=run.table), "degradation_laws": laws,
                    "memory_answer": answer, **pics})
        int8 = run.table[(run.table["method"] == "rtn_channel") & (run.table["bits"] == 8)]
        if len(int8):
            wb.summary["int8/max_rel_delta"] = float(np.max(int8["rel_delta"]))
    finally:
        wb.finish()
