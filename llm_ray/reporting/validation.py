"""The report's "Does the law hold?": the registered forecasts against the held-out runs, in a table,
in words, in a picture (validation.png) and in the sweep's W&B fit run."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from llm_ray.core.records import FitRecord, ForecastCheck, Registration
from llm_ray.fitting.parametric import frontier
from llm_ray.fitting.primary import PRIMARY, noise_allows
from llm_ray.reporting.plots import final_ok, plt, png
from llm_ray.reporting.text import with_interval

COLORS = {"approach1": "tab:blue", "approach2": "tab:orange", "approach3": "tab:green", "primary": "tab:red"}


def label(name: str) -> str:
    return "primary" if name == PRIMARY else f"approach {name[-1]}"


def validation_markdown(checks: list[ForecastCheck], registrations: list[Registration], supported,
                        top_budget: float) -> str:
    primary = [c for c in checks if c.approach == PRIMARY]
    diagnostics = [c for c in checks if c.approach != PRIMARY]
    lines = ["## Does the law hold?", ""]
    if primary:
        lines += primary_section(primary, diagnostics, registrations, top_budget)
    lines += ["Each approach's forecast for a run at a budget the fit never saw, registered in "
              "`predictions.json` before that run trained, against the loss it measured. Approach 3 predicts "
              "L(N, D) at the run's own N and D; approaches 1 and 2 predict the frontier loss L_opt(C).", "",
              "| C [FLOPs] (x top budget) | held-out run | chosen by | approach | predicted loss | measured | "
              "error | inside the interval? |", "|---|---|---|---|---|---|---|---|"]
    for c in diagnostics:
        lines.append(f"| {c.flops:.3g} ({c.flops / top_budget:.0f}x) | N = {c.params:,}, D = {c.tokens:.3g} | "
                     f"{', '.join(a[-1] for a in c.chosen_by)} | {c.approach[-1]} | "
                     f"{with_interval(c.predicted, c.ci, '.4f')} | {_measured(c)} | {_error(c)} | {_verdict(c)} |")
    lines.append("")
    lines += verdict_lines(diagnostics, supported)
    for b in registrations:
        lines += [f"- Not trained at C = {b.flops:.3g}: N ≈ {d.params:,} ({', '.join(d.chosen_by)}): {d.reason}"
                  for d in b.dropped]
    lines += ["", "![validation](validation.png)", ""]
    return "\n".join(lines)


def primary_section(primary: list[ForecastCheck], diagnostics: list[ForecastCheck], registrations: list[Registration],
                    top_budget: float) -> list:
    """The table that leads "Does the law hold?": the one forecast per budget, chosen before the run."""
    lines = ["The primary forecast for each budget the fit never saw (the N to train and the loss to expect), "
             "chosen by a rule fixed before the run and registered in `predictions.json` before it trained, "
             "against the loss the run measured.", "",
             "| C [FLOPs] (x top budget) | held-out run | rule | predicted loss | measured | error | "
             "inside the interval? |", "|---|---|---|---|---|---|---|"]
    rules = {float(b.flops): b.primary for b in registrations if b.primary is not None}
    for c in primary:
        rule = rules.get(c.flops)
        how = f"`{rule.rule}`: N from {rule.n_from[-1]}, L from {rule.loss_from[-1]}" if rule else "?"
        lines.append(f"| **{c.flops:.3g} ({c.flops / top_budget:.0f}x)** | N = {c.params:,}, D = {c.tokens:.3g} | "
                     f"{how} | **{with_interval(c.predicted, c.ci, '.4f')}** | {_measured(c)} | **{_error(c)}** | "
                     f"{_verdict(c)} |")
    lines += [""] + primary_verdict(primary) + size_verdict_lines(primary, diagnostics) + noise_lines(registrations)
    lines += [""]
    lines += [f"- Why at C = {b.flops:.3g}: {b.primary.why}." for b in registrations if b.primary is not None]
    return lines + ["", "Diagnostics: every approach's own forecast for the same runs.", ""]


def _measured(c: ForecastCheck) -> str:
    return f"{c.measured:.4f}" if c.measured is not None else c.status


def _error(c: ForecastCheck) -> str:
    return f"{100 * c.error:+.2f}%" if c.error is not None else "n/a"


def _verdict(c: ForecastCheck) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[c.inside]


def size_verdict_lines(primary: list[ForecastCheck], diagnostics: list[ForecastCheck]) -> list[str]:
    """Whether the N the primary forecast recommended beat the other sizes trained at the same budget
    (the other approaches' N): a check of N_opt, as the loss columns check L."""
    out = []
    for c in primary:
        others = {d.cell_id: d for d in diagnostics
                  if d.flops == c.flops and d.cell_id != c.cell_id and d.measured is not None}
        if c.measured is None or not others:
            continue
        rivals = ", ".join(f"N = {d.params:,} reached {d.measured:.4f}" for d in others.values())
        best = min(d.measured for d in others.values())
        verdict = ("the recommended N was the better size" if c.measured <= best else
                   f"the recommended N was not the better size, by {c.measured - best:.4f} nats")
        out.append(f"- At C = {c.flops:.3g} the recommended N = {c.params:,} reached {c.measured:.4f}; {rivals}: "
                   f"{verdict}.")
    return out


def noise_lines(registrations: list[Registration]) -> list[str]:
    out = []
    for b in registrations:
        p = b.primary
        if p is None or p.noise_sd is None:
            out.append(f"- At C = {b.flops:.3g} no seed replicates were trained: the run-to-run noise is "
                       "not measured (sweep.replicate_minima).")
        else:
            out.append(f"- The noise alone allows ±{100 * noise_allows(p.noise_sd, p.loss, b.ci_level):.2f}% "
                       f"at C = {b.flops:.3g} (seed-to-seed sd {p.noise_sd:.4f} nats, from replicated cells); "
                       "an error within that is as good as the measurement can tell.")
    return out


def primary_verdict(primary: list[ForecastCheck]) -> list[str]:
    measured = [c for c in primary if c.measured is not None]
    if not measured:
        return ["- No held-out run of the primary forecast has finished yet."]
    errors = [abs(c.error) for c in measured]
    inside = sum(bool(c.inside) for c in measured)
    return [f"- **Primary forecast: mean |error| {100 * np.mean(errors):.2f}% (max {100 * max(errors):.2f}%), "
            f"{inside} of {len(measured)} measured losses inside its interval.**"]


def verdict_lines(checks: list[ForecastCheck], supported) -> list[str]:
    measured = [c for c in checks if c.measured is not None]
    if not measured:
        return ["- No held-out run has finished yet: re-run to train them (finished ones are kept)."]
    lines = []
    for name in sorted({c.approach for c in measured}, reverse=True):
        mine = [c for c in measured if c.approach == name]
        errors = [abs(c.error) for c in mine]
        inside = sum(bool(c.inside) for c in mine)
        lines.append(f"- Approach {name[-1]}: mean |error| {100 * np.mean(errors):.2f}% (max {100 * max(errors):.2f}%), "
                     f"{inside} of {len(mine)} measured losses inside its interval.")
    best = [c for c in measured if c.approach == supported]
    if supported and any(c.inside for c in best):
        lines.append(f"- **The held-out runs support approach {supported[-1]}** (most measurements inside its "
                     f"interval, then the smallest error).")
    elif supported:
        lines.append(f"- **No approach's interval holds the measured loss**: the law's stated uncertainty is too "
                     f"small at this extrapolation; the closest forecast is approach {supported[-1]}'s.")
    failed = [c for c in checks if c.measured is None]
    if failed:
        lines.append(f"- {len({c.cell_id for c in failed})} held-out run(s) did not finish ok "
                     f"({', '.join(sorted({c.status for c in failed}))}): the recipe could not train the "
                     f"recommended model.")
    return lines


def validation_png(table: pd.DataFrame, fit: FitRecord, checks: list[ForecastCheck]) -> bytes:
    """Left: loss vs compute, the sweep's final points and each approach's frontier carried out to the
    held-out budgets, with the measurements there. Right: each held-out run up close, every approach's
    registered forecast with its interval against the loss the run measured."""
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    sweep = final_ok(table[table["role"] == "sweep"])  # the fitted runs
    ax.scatter(sweep["flops"], sweep["loss"], s=12, color="0.6", label="sweep runs (fitted)")
    c = np.geomspace(sweep["flops"].min() / 1.5, max([ch.flops for ch in checks] + [sweep["flops"].max()]) * 1.5, 200)
    for name, color in COLORS.items():
        curve = frontier_curve(fit, name, c)
        if curve is not None:
            ax.plot(c, curve, color=color, lw=1.5, label=f"approach {name[-1]}: frontier L_opt(C)")
    held = [ch for ch in checks if ch.measured is not None]
    ax.scatter([h.flops for h in held], [h.measured for h in held], marker="*", s=200, color="k", zorder=5,
               label="held-out runs: measured")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones collide on a short axis
    ax.set_xlabel("compute C [FLOPs]")
    ax.set_ylabel("validation loss L [nats/token]")
    ax.set_title("The law carried to budgets it never saw")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    draw_forecasts_up_close(zoom, checks)
    return png(fig)


def draw_forecasts_up_close(ax, checks: list[ForecastCheck]) -> None:
    runs = list(dict.fromkeys(ch.cell_id for ch in checks))
    names = sorted(COLORS)
    for i, cell in enumerate(runs):
        mine = [ch for ch in checks if ch.cell_id == cell]
        for ch in mine:
            x = i * (len(names) + 1) + names.index(ch.approach)
            err = None if ch.ci is None else [[ch.predicted - ch.ci[0]], [ch.ci[1] - ch.predicted]]
            ax.errorbar([x], [ch.predicted], yerr=err, fmt="o", color=COLORS[ch.approach], capsize=4, ms=6)
        if mine[0].measured is not None:
            left, right = i * (len(names) + 1) - 0.4, i * (len(names) + 1) + len(names) - 0.6
            ax.hlines(mine[0].measured, left, right, color="k", lw=2, label="measured" if i == 0 else None)
    ax.set_xticks([i * (len(names) + 1) + (len(names) - 1) / 2 for i in range(len(runs))])
    ax.set_xticklabels([f"C={ch.flops:.2g}\nN={ch.params / 1e3:.0f}k, D={ch.tokens / 1e6:.1f}M"
                        for ch in (next(c for c in checks if c.cell_id == r) for r in runs)], fontsize=8)
    for name in names:
        ax.errorbar([], [], yerr=[], fmt="o", color=COLORS[name], capsize=4, label=f"{label(name)}: forecast")
    ax.set_ylabel("validation loss L [nats/token]")
    ax.set_title("Held-out runs: forecasts (90% intervals) vs measured")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def frontier_curve(fit: FitRecord, name: str, c: np.ndarray):
    a = fit.approach(name)
    if not a.ok:
        return None
    if name == "approach3":
        return frontier(np.array(a.law()), c, fit.flops_per_param_token)[2]
    return a.k_loss * c ** a.loss_exponent


def log_validation_table(wandb_cfg, sweep_name: str, checks: list[ForecastCheck]) -> None:
    """The checks as a table in the sweep's W&B fit run (resumed by its id)."""
    from llm_ray.io.tracking import start_run

    run = start_run(wandb_cfg, name=f"{sweep_name}-fit", key="fit", job_type="fit", config={"sweep": sweep_name})
    if run is None:
        return
    import wandb

    try:
        cols = ["flops", "cell_id", "params", "tokens", "approach", "predicted", "ci_low", "ci_high", "measured",
                "error", "inside"]
        rows = [[c.flops, c.cell_id, c.params, c.tokens, c.approach, c.predicted, *(c.ci or (None, None)),
                 c.measured, c.error, c.inside] for c in checks]
        run.log({"validation": wandb.Table(columns=cols, data=rows)})
    finally:
        run.finish()
