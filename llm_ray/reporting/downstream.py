"""The downstream stage's answer: the loss -> accuracy fit and the two-step forecast (math in
llm_ray.fitting.downstream), two plots, the report section (downstream.md, inlined by report.md) and
the W&B `downstream` run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from llm_ray.fitting.downstream import AccuracyForecast, SigmoidFit
from llm_ray.io import storage
from llm_ray.reporting.text import with_interval


class DownstreamFit(NamedTuple):
    """The sigmoid through the pre-trained cells, its bootstrap replicates, and the forecasts."""

    sigmoid: Optional[SigmoidFit]
    samples: Optional[np.ndarray]
    forecasts: list
    note: str = ""
    span: float = float("nan")
    """How far the fitted curve moves over the cells' losses (fitting.downstream.fitted_span)."""
    noise: float = float("nan")
    """The cells' mean binomial half-width: a span below it is no detectable trend."""

    @property
    def flat(self) -> bool:
        return bool(self.span < self.noise)


def fit_downstream(sweep_dir: str, table: pd.DataFrame, n_classes: int, n_bootstrap: int, level: float,
                   seed: int) -> DownstreamFit:
    """Sigmoid of accuracy vs pre-training loss (floor: chance, 1/K on the balanced test split), and
    accuracy at the sweep's fit.predict_flops through approach 3's L_opt(C) (refitted here from
    results.parquet with the sweep's own fit config, for its bootstrap replicates)."""
    from llm_ray.fitting.downstream import fit_sigmoid, fitted_span, forecast_accuracy, sigmoid_samples

    pre = table[table["kind"] == "pretrained"]
    try:
        fit = fit_sigmoid(pre["pretrain_loss"], pre["accuracy"], 1.0 / n_classes)
    except ValueError as err:
        return DownstreamFit(None, None, [], str(err))
    samples = sigmoid_samples(fit, pre["pretrain_loss"], pre["accuracy"], n_bootstrap, seed) if n_bootstrap else None
    flops, loss, loss_samples, note = loss_forecasts(sweep_dir)
    return DownstreamFit(fit, samples, forecast_accuracy(fit, samples, flops, loss, loss_samples, level) if flops else [],
                         note, span=fitted_span(fit, pre["pretrain_loss"]),
                         noise=float(((pre["accuracy_hi"] - pre["accuracy_lo"]) / 2).mean()))


def loss_forecasts(sweep_dir: str) -> tuple:
    """(budgets, L_opt, (R, J) replicates, note) of approach 3 at the sweep's fit.predict_flops."""
    from llm_ray.fitting import fit_all
    from llm_ray.fitting.predict import frontier_of
    from llm_ray.io.sweepdir import FIT, SweepDir

    sweep = SweepDir(sweep_dir)
    if not sweep.has(FIT):
        return [], [], None, "no fit.json: run the sweep's fit first"
    cfg = sweep.fit_config(plots=False)
    if not cfg.predict_flops:
        return [], [], None, "the sweep's fit.predict_flops is empty: no budget to forecast"
    out = fit_all(sweep.fitted(), cfg)
    params = out.params_of("approach3")
    if params is None:
        return [], [], None, f"approach 3 was not fitted: {out.skipped.get('approach3', '')}"
    k = out.cfg.flops_per_param_token
    samples = out.samples.get("approach3")
    loss_samples = None if samples is None else frontier_of("approach3", samples, cfg.predict_flops, k)[2]
    return list(cfg.predict_flops), frontier_of("approach3", params, cfg.predict_flops, k)[2], loss_samples, ""


def write_downstream_report(sweep_dir: str, cfg, table: pd.DataFrame, splits, *, failed: list, wandb_cfg=None,
                            log=print) -> DownstreamFit:
    """Fit, plots, downstream.md, report.md re-rendered, W&B run; returns the fit."""
    from llm_ray.reporting.markdown import refresh_report

    fit = fit_downstream(sweep_dir, table, len(splits.classes), cfg.n_bootstrap, cfg.ci_level, cfg.seed)
    pngs = {f"downstream_{cfg.task}_vs_flops.png": accuracy_vs_flops_png(table, fit, cfg.task),
            f"downstream_{cfg.task}_vs_loss.png": accuracy_vs_loss_png(table, fit, cfg.task, cfg.ci_level)}
    for name, data in pngs.items():
        storage.write_bytes_atomic(storage.join(sweep_dir, name), data)
    section = render_section(table, fit, cfg, splits, list(pngs), failed)
    storage.write_bytes_atomic(storage.join(sweep_dir, "downstream.md"), section.encode())
    if storage.exists(storage.join(sweep_dir, "fit.json")):
        refresh_report(sweep_dir)
    log(section.split("\n| cell |")[0])
    if wandb_cfg is not None:
        log_downstream_run(wandb_cfg, sweep_dir, cfg.task, table, fit, list(pngs))
    return fit


# --------------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------------

def render_section(table: pd.DataFrame, fit: DownstreamFit, cfg, splits, pngs: list, failed: list) -> str:
    pct = f"{cfg.ci_level:.0%}"
    lines = [f"## Downstream: `{cfg.task}`", "",
             f"Every finished cell fine-tuned (all parameters, one recipe: {recipe_words(cfg)}) on "
             f"{len(splits.train_texts):,} labelled examples and scored on a fixed test split of "
             f"{len(splits.test_texts):,} ({len(splits.classes)} balanced classes {list(splits.classes)}; drawn from "
             f"{splits.n_distinct:,} distinct texts of {splits.n_records:,} records, {splits.n_conflicting} with "
             f"conflicting labels dropped). Accuracy intervals: {pct} Clopper-Pearson.", ""]
    lines += answer_lines(table) + [""] + fit_lines(fit, pct) + [""]
    if failed:
        lines += [f"- fine-tunes that failed (retried by the next run): {', '.join(failed)}", ""]
    lines += ["| cell | kind | N | pre-training C | pre-training loss | accuracy | macro-F1 | fine-tune s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in table.sort_values(["kind", "params", "flops"]).itertuples():
        loss = f"{r.pretrain_loss:.3f}" if np.isfinite(r.pretrain_loss) else "-"
        lines.append(f"| {r.cell_id} | {r.kind} | {r.params:,} | {r.flops:.3g} | {loss} | "
                     f"{accuracy_text(r)} | {r.macro_f1:.3f} | {r.finetune_s:.1f} |")
    return "\n".join(lines + [""] + [f"![{p}]({p})" for p in pngs]) + "\n"


def recipe_words(cfg) -> str:
    return (f"AdamW lr {cfg.lr:g}, {cfg.epochs} epochs, batch {cfg.batch_size}, warm-up {cfg.warmup_fraction:g} "
            f"then linear decay, weight decay {cfg.weight_decay:g}, {cfg.pooling}-pooled head, first "
            f"{cfg.max_tokens} tokens")


def accuracy_text(r) -> str:
    return f"{100 * r.accuracy:.1f}% [{100 * r.accuracy_lo:.1f}, {100 * r.accuracy_hi:.1f}]"


def answer_lines(table: pd.DataFrame) -> list:
    """The best pre-trained cell against its from-scratch twin and the baselines, with intervals."""
    pre = table[table["kind"] == "pretrained"]
    if pre.empty:
        return ["No pre-trained cell was fine-tuned."]
    best = pre.loc[pre["accuracy"].idxmax()]
    lines = [f"- **Best pre-trained cell**: {best.cell_id} (N = {best.params:,}, C = {best.flops:.3g} FLOPs): "
             f"accuracy {accuracy_text(best)}, macro-F1 {best.macro_f1:.3f}."]
    twin = table[(table["kind"] == "scratch") & (table["params"] == best.params)]
    others = [("its from-scratch twin", twin.iloc[0] if len(twin) else None)] + [
        (name, table[table["cell_id"] == name].iloc[0] if (table["cell_id"] == name).any() else None)
        for name in ("majority", "tfidf_logreg")]
    for label, row in others:
        if row is not None:
            lines.append(f"- vs {label} ({row.cell_id}): {accuracy_text(row)}; {margin_words(best, row)}")
    return lines


def margin_words(a, b) -> str:
    diff = 100 * (a.accuracy - b.accuracy)
    if a.accuracy_lo > b.accuracy_hi:
        return f"**{diff:+.1f} points, intervals disjoint** (a margin outside both intervals)."
    if b.accuracy_lo > a.accuracy_hi:
        return f"**{diff:+.1f} points: the baseline is better**, intervals disjoint."
    return f"{diff:+.1f} points, intervals overlap (not separated at this test size)."


def fit_lines(fit: DownstreamFit, pct: str) -> list:
    if fit.sigmoid is None:
        return [f"- Accuracy vs pre-training loss: no sigmoid fit ({fit.note})."]
    s = fit.sigmoid
    if fit.flat:
        lines = [f"- **Accuracy vs pre-training loss L: no detectable dependence.** Over the {s.n} cells' losses the "
                 f"fitted sigmoid (floor = chance {s.floor:.3f}) moves {100 * fit.span:.2f} points, less than the cells' "
                 f"own binomial noise (±{100 * fit.noise:.1f} points): it sits on one flat arm, its slope and midpoint "
                 f"are not identified, and no interval is quoted for them (bootstrap replicates warm-started from "
                 f"the fit stay on that arm). The forecast below is that flat level."]
    else:
        ci = {}
        if fit.samples is not None:
            from llm_ray.fitting.bootstrap import percentile_interval

            lo, hi = percentile_interval(fit.samples, float(pct.rstrip("%")) / 100)
            ci = {name: (lo[i], hi[i]) for i, name in enumerate(("ceiling", "midpoint", "slope"))}
        lines = [f"- **Accuracy vs pre-training loss L** (sigmoid over {s.n} cells, floor = chance {s.floor:.3f}): "
                 f"acc(L) = {s.floor:.2f} + ({with_interval(s.ceiling, ci.get('ceiling'), '.3f')} - {s.floor:.2f}) / "
                 f"(1 + exp({with_interval(s.slope, ci.get('slope'), '.3g')} (L - "
                 f"{with_interval(s.midpoint, ci.get('midpoint'), '.3f')}))); rms residual {100 * s.rmse:.2f} points "
                 f"({pct} bootstrap intervals over cells)."]
    if not fit.forecasts:
        return lines + [f"- Two-step forecast: none ({fit.note})."]
    lines += ["", f"Two-step forecast (approach 3's compute-optimal loss L_opt(C), then the sigmoid; {pct} bootstrap "
                  "intervals pairing replicates of both fits):", "",
              "| budget C [FLOPs] | L_opt(C) | accuracy |", "|---|---|---|"]
    lines += [f"| {f.flops:.3g} | {with_interval(f.loss, f.loss_ci, '.3f')} | "
              f"{with_interval(100 * f.accuracy, f.accuracy_ci and tuple(100 * v for v in f.accuracy_ci), '.1f')}% |"
              for f in fit.forecasts]
    return lines


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------

def _baseline_lines(ax, table: pd.DataFrame) -> None:
    """Baselines as horizontal lines: majority and TF-IDF in grey, each size from scratch in its size's colour."""
    for name, style in (("majority", ":"), ("tfidf_logreg", "--")):
        row = table[table["cell_id"] == name]
        if len(row):
            ax.axhline(row["accuracy"].iloc[0], color="0.35", ls=style, lw=1.2, label=f"{name} (baseline)")
    for i, (_, row) in enumerate(table[table["kind"] == "scratch"].sort_values("params").iterrows()):
        ax.axhline(row["accuracy"], color=f"C{i}", ls="-.", lw=0.9, alpha=0.8, label=f"{row['cell_id']} (from scratch)")


def accuracy_vs_flops_png(table: pd.DataFrame, fit: DownstreamFit, task: str) -> bytes:
    """Accuracy vs pre-training compute, one curve per model size (as the IsoFLOP plot), with the
    binomial intervals, the baselines as lines and the two-step forecast."""
    import matplotlib.pyplot as plt

    from llm_ray.reporting.plots import png

    fig, ax = plt.subplots(figsize=(8, 5.5))
    pre = table[table["kind"] == "pretrained"]
    for i, (n, g) in enumerate(pre.sort_values("flops").groupby("params", sort=True)):
        ax.errorbar(g["flops"], g["accuracy"], yerr=[g["accuracy"] - g["accuracy_lo"], g["accuracy_hi"] - g["accuracy"]],
                    color=f"C{i}", marker="o", capsize=3, label=f"N = {n:,} (pre-trained)")
    _baseline_lines(ax, table)
    if fit.forecasts:
        f = fit.forecasts
        err = None if f[0].accuracy_ci is None else np.abs(np.array([[x.accuracy_ci[0], x.accuracy_ci[1]] for x in f]).T
                                                            - np.array([x.accuracy for x in f]))
        ax.errorbar([x.flops for x in f], [x.accuracy for x in f], yerr=err, color="k", marker="*", ms=11, ls="none",
                    capsize=4, label="two-step forecast at L_opt(C)")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training compute C [FLOPs]")
    ax.set_ylabel(f"test accuracy ({task})")
    ax.set_title("Downstream accuracy vs pre-training compute (bars: binomial intervals)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return png(fig)


def accuracy_vs_loss_png(table: pd.DataFrame, fit: DownstreamFit, task: str, level: float) -> bytes:
    """Accuracy vs pre-training validation loss with the fitted sigmoid and its bootstrap band."""
    import matplotlib.pyplot as plt

    from llm_ray.fitting.bootstrap import percentile_interval
    from llm_ray.fitting.downstream import sigmoid
    from llm_ray.reporting.plots import png

    fig, ax = plt.subplots(figsize=(8, 5.5))
    pre = table[table["kind"] == "pretrained"]
    for i, (n, g) in enumerate(pre.groupby("params", sort=True)):
        ax.errorbar(g["pretrain_loss"], g["accuracy"], yerr=[g["accuracy"] - g["accuracy_lo"], g["accuracy_hi"] - g["accuracy"]],
                    color=f"C{i}", marker="o", ls="none", capsize=3, label=f"N = {n:,}")
    if fit.sigmoid is not None and len(pre):
        losses = [f.loss for f in fit.forecasts]
        x = np.linspace(min([pre["pretrain_loss"].min()] + losses) - 0.1, pre["pretrain_loss"].max() + 0.1, 200)
        ax.plot(x, sigmoid(x, fit.sigmoid.floor, fit.sigmoid.params()), color="k", lw=1.5, label="fitted sigmoid")
        if fit.samples is not None:
            lo, hi = percentile_interval(sigmoid(x[None, :], fit.sigmoid.floor, fit.samples[:, None, :]), level)
            ax.fill_between(x, lo, hi, color="k", alpha=0.12, label=f"{level:.0%} bootstrap band")
        for f in fit.forecasts:
            ax.plot([f.loss], [f.accuracy], "k*", ms=11)
            ax.annotate(f"C={f.flops:.2g}", (f.loss, f.accuracy), fontsize=7, xytext=(4, 4), textcoords="offset points")
    _baseline_lines(ax, table)
    ax.invert_xaxis()  # lower loss (more pre-training) to the right
    ax.set_xlabel("pre-training validation loss L [nats/token] (axis reversed)")
    ax.set_ylabel(f"test accuracy ({task})")
    ax.set_title("Accuracy vs pre-training loss (stars: two-step forecasts)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return png(fig)


# --------------------------------------------------------------------------------------------
# W&B
# --------------------------------------------------------------------------------------------

def log_downstream_run(wandb_cfg, sweep_dir: str, task: str, table: pd.DataFrame, fit: DownstreamFit,
                       pngs: list) -> None:
    """The sweep's `downstream` run: the rows and the forecasts as tables, the plots as images."""
    from llm_ray.io.tracking import start_run

    from llm_ray.io.sweepdir import PLAN, SweepDir

    sweep = SweepDir(sweep_dir)
    group = sweep.group if sweep.has(PLAN) else wandb_cfg.group
    run = start_run(dataclasses.replace(wandb_cfg, group=group), name=f"{group}-downstream-{task}",
                    key=f"downstream-{task}", job_type="downstream",
                    config={"task": task, "sigmoid": fit.sigmoid._asdict() if fit.sigmoid else None})
    if run is None:
        return
    import wandb

    try:
        forecasts = wandb.Table(columns=["flops", "loss", "loss_lo", "loss_hi", "accuracy", "accuracy_lo", "accuracy_hi"],
                                data=[[f.flops, f.loss, *(f.loss_ci or (None, None)), f.accuracy,
                                       *(f.accuracy_ci or (None, None))] for f in fit.forecasts])
        with tempfile.TemporaryDirectory() as tmp:
            images = {}
            for name in pngs:
                local = os.path.join(tmp, name)
                storage.download_atomic(storage.join(sweep_dir, name), local)
                images[f"plots/{name[:-4]}"] = wandb.Image(local)
            run.log({"downstream": wandb.Table(dataframe=table), "forecasts": forecasts, **images})
        if fit.sigmoid is not None:
            for k, v in fit.sigmoid._asdict().items():
                run.summary[f"sigmoid/{k}"] = v
    finally:
        run.finish()


__all__ = ["AccuracyForecast", "DownstreamFit", "fit_downstream", "write_downstream_report"]
