"""A comparison in words (compare.md), in a picture (compare.png) and as a W&B table."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import ScalarFormatter

from llm_ray.core.comparison import CompareRecord
from llm_ray.reporting.plots import plt, png
from llm_ray.reporting.text import with_interval


def pct(level: float) -> str:
    return f"{int(round(100 * level))}%"


def headline(r: CompareRecord) -> str:
    """`B is worth 1.4x [1.2, 1.7] A's compute at 1e12 FLOPs (90% interval; excludes 1), constant with C ...`"""
    a, b = r.labels
    k = f"{with_interval(r.centre_k, r.centre_ci, '.3g')}"
    verdict = excludes(r.centre_ci, r.labels)
    lines = [f"compare: {b} is worth {k}x {a}'s compute at C = {r.centre_flops:.3g} FLOPs "
             f"({pct(r.ci_level)} interval; {verdict}); {trend_words(r)}"]
    for t in r.targets:
        lines.append(f"compare: carried to C = {t.flops:.3g}: {with_interval(t.k, t.k_ci, '.3g')}x "
                     f"({excludes(t.k_ci, r.labels)})")
    return "\n".join(lines)


def excludes(ci, labels=("A", "B")) -> str:
    if ci is None:
        return "no interval"
    if ci[0] > 1:
        return f"the interval excludes 1: {labels[1]} is better"
    if ci[1] < 1:
        return f"the interval excludes 1: {labels[0]} is better"
    return "the interval includes 1: no difference shown"


def trend_words(r: CompareRecord) -> str:
    per_decade = 10 ** r.slope
    span = with_interval(per_decade, None if r.slope_ci is None else tuple(10 ** np.array(r.slope_ci)), ".3g")
    if r.trend == "fading":
        return f"the gain fades: k is multiplied by {span} per decade of compute"
    if r.trend == "growing":
        return f"the gain grows: k is multiplied by {span} per decade of compute"
    if r.trend == "constant":
        return f"no trend with C shown (k changes by a factor {span} per decade; the interval includes 1)"
    return "its trend with C is unknown (no interval)"


def compare_markdown(r: CompareRecord) -> str:
    a, b = r.labels
    unit = "bits per byte (the tokenizers differ)" if r.metric == "bpb" else "held-out loss (nats per token)"
    lines = [f"# {b} against {a}: what is the change worth in compute?", "",
             f"**{headline(r).replace('compare: ', '').splitlines()[0]}.**", "",
             f"The compute-equivalent multiplier k(C) = C_A(L_B(C)) / C: how much more compute {a} needs to reach "
             f"the loss {b} reaches with C (k > 1: {b} is better), as DeepSeek LLM (2024) states its ablations. "
             f"Losses are {unit}; each budget's loss is its IsoFLOP parabola's minimum; {a}'s frontier through its "
             f"minima is {r.frontier_a}. Intervals: {pct(r.ci_level)} bootstrap ({r.n_resamples} replicates of "
             f"each sweep, {r.resample} resampled, expanded for {r.residual_dof:.0f} residual degrees of freedom).", "",
             "| C [FLOPs] | in A | in B | k | where k comes from | N_opt,B / N_opt,A | L_opt A | L_opt B |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r.budgets:
        source = ("B's minimum, A's frontier" + ("" if row.in_trend else " (extrapolated)") if row.b_measured
                  else "the trend (B measured nothing here)")
        lines.append(f"| {row.flops:.3g} | {'yes' if row.in_a else '-'} | {'yes' if row.in_b else '-'} | "
                     f"{with_interval(row.k, row.k_ci)} | {source} | "
                     f"{with_interval(row.n_opt_ratio, row.n_opt_ratio_ci) if row.n_opt_ratio else 'n/a'} | "
                     f"{fmt(row.loss_a)} | {fmt(row.loss_b)} |")
    lines += ["", f"**Trend.** log10 k = const + s log10 C over {b}'s budgets: s = "
                  f"{with_interval(r.slope, r.slope_ci, '.3f')}: {trend_words(r)}.", ""]
    lines += [f"- At C = {t.flops:.3g}: k = {with_interval(t.k, t.k_ci)} ({excludes(t.k_ci, r.labels)}); N_opt,B / N_opt,A = "
              f"{with_interval(t.n_opt_ratio, t.n_opt_ratio_ci)}. The interval holds the slope's uncertainty times "
              f"the distance from the measured budgets: it is as wide as the sweeps allow." for t in r.targets]
    lines += floor_lines(r) + [""] + [f"- {n}" for n in r.notes] + ["", "![multiplier](compare.png)", ""]
    return "\n".join(lines)


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def floor_lines(r: CompareRecord) -> list:
    f = r.floor
    if f is None:
        return ["", "**Floor E.** Not compared: the sweeps' approach-3 laws are in nats per token of different "
                    "tokenizers."]
    a, b = r.labels
    text = f"{a}: E = {with_interval(f.e_a, f.e_a_ci, '.4f')}; {b}: E = {with_interval(f.e_b, f.e_b_ci, '.4f')}"
    if f.identified:
        return ["", f"**Floor E** (approach 3 of each sweep's fit.json): {text}; difference {f.e_b - f.e_a:+.4f}."]
    return ["", f"**Floor E**: {text}. {f.note}."]


def compare_png(r: CompareRecord) -> bytes:
    """k against C: every budget with its interval, the trend with its band carried to the targets."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rows = r.budgets
    measured = [x for x in rows if x.b_measured]
    for group, marker, label in (([x for x in measured if x.in_trend], "o", "B's minimum through A's frontier"),
                                 ([x for x in measured if not x.in_trend], "s", "... A extrapolated (not in trend)"),
                                 ([x for x in rows if not x.b_measured], "^", "B not measured: the trend")):
        if group:
            c = np.array([x.flops for x in group])
            k = np.array([x.k for x in group])
            lo = np.array([x.k_ci[0] if x.k_ci else x.k for x in group])
            hi = np.array([x.k_ci[1] if x.k_ci else x.k for x in group])
            ax.errorbar(c, k, yerr=[k - lo, hi - k], fmt=marker, capsize=4, label=label)
    trend_band(ax, r)
    ax.axhline(1.0, color="grey", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("compute C [FLOPs]")
    ax.set_ylabel(f"k(C) = C_A(L_B(C)) / C  ({r.metric})")
    a, b = r.labels
    ax.set_title(f"{b} vs {a}: compute-equivalent multiplier ({pct(r.ci_level)} intervals)", fontsize=10)
    ax.legend(fontsize=8)
    return png(fig)


def trend_band(ax, r: CompareRecord) -> None:
    """The trend line and its interval, carried to the targets (dashed lines)."""
    band = [row for row in r.trend_band if row[2] is not None]
    c = np.array([row[0] for row in r.trend_band])
    ax.plot(c, [row[1] for row in r.trend_band], color="tab:red", lw=1.5,
            label=f"trend: x{10 ** r.slope:.3g} per decade")
    if band:
        ax.fill_between([row[0] for row in band], [row[2] for row in band], [row[3] for row in band],
                        color="tab:red", alpha=0.15, label="trend's interval")
    for t in r.targets:
        ax.axvline(t.flops, color="tab:red", lw=0.8, ls="--")


def log_compare_table(wandb_cfg, r: CompareRecord) -> None:
    """The per-budget and target multipliers as tables in a W&B run of their own (job_type compare)."""
    from llm_ray.io.tracking import start_run

    a, b = r.labels
    run = start_run(wandb_cfg, name=f"compare-{a}-vs-{b}", key=f"compare-{a}-vs-{b}", job_type="compare",
                    config={"labels": list(r.labels), "sweep_dirs": list(r.sweep_dirs), "metric": r.metric})
    if run is None:
        return
    import wandb

    try:
        cols = ["flops", "where", "k", "k_low", "k_high", "n_opt_ratio", "in_a", "in_b", "b_measured", "in_trend"]
        rows = [[x.flops, "budget", x.k, *(x.k_ci or (None, None)), x.n_opt_ratio, x.in_a, x.in_b, x.b_measured,
                 x.in_trend] for x in r.budgets]
        rows += [[t.flops, "target", t.k, *(t.k_ci or (None, None)), t.n_opt_ratio, False, False, False, False]
                 for t in r.targets]
        run.log({"multiplier": wandb.Table(columns=cols, data=rows)})
        run.summary.update({"centre_k": r.centre_k, "slope_per_decade": r.slope, "trend": r.trend})
    finally:
        run.finish()
