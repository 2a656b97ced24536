"""report.md: the sweep's answer in words first, then its cells, then its plots.

Reads only records (FitRecord), the results table and the plan: a report can be remade, or a fit
redone with other settings, without retraining.
"""

from __future__ import annotations

import pandas as pd

from llm_ray.core.records import ApproachResult, FitRecord, IsoFlopMinimum, PlanRecord, PrimaryForecast
from llm_ray.data.overlap import overlap_warning, overlap_words
from llm_ray.fitting.primary import noise_allows, sd_interval
from llm_ray.fitting.validation import disagreements
from llm_ray.reporting.plots import final_ok
from llm_ray.reporting.text import with_interval

CHINCHILLA_EXPONENT = 0.5  # Hoffmann et al. 2022: N_opt and D_opt both grow as ~C^0.5
ORDER = ("approach3", "approach2", "approach1")


STAGE_SECTIONS = ("validation.md", "downstream.md", "compress.md")
"""Sections the stages write into the sweep directory; report.md inlines those present, in this order,
between the answer and the cells."""


def render_report(fit: FitRecord, table: pd.DataFrame, plan: PlanRecord, sections: tuple = ()) -> str:
    lines = [f"# Scaling-law report: sweep `{plan.name}`", ""]
    lines += answer_section(fit, evaluation_noise_lines(fit, table) + overlap_lines(plan))
    lines += [s.rstrip() + "\n" for s in sections]
    lines += cells_section(table, plan) + plots_section(fit)
    return "\n".join(lines) + "\n"


def stage_sections(sweep_dir: str) -> tuple:
    """The stage sections present in the sweep directory, in STAGE_SECTIONS order."""
    from llm_ray.io.sweepdir import SweepDir

    return SweepDir(sweep_dir).sections(STAGE_SECTIONS)


def refresh_report(sweep_dir: str) -> str:
    """Re-render report.md from the sweep directory's own files (fit.json, results.parquet, plan.json
    and the stage sections): a stage calls this after writing its section."""
    from llm_ray.io import storage
    from llm_ray.io.sweepdir import SweepDir

    sweep = SweepDir(sweep_dir)
    text = render_report(sweep.fit, sweep.fitted(), sweep.plan, stage_sections(sweep_dir))
    storage.write_bytes_atomic(sweep.path("report.md"), text.encode())
    return text


def answer_section(fit: FitRecord, noise_lines: tuple = ()) -> list[str]:
    if fit.error:
        return [f"**No fit was possible:** {fit.error}", ""]
    lines = ["## The answer", "",
             f"Intervals are {int(round(100 * fit.ci_level))}% bootstrap intervals over runs "
             f"({fit.n_resamples} resamples).", ""]
    lines += forecast_table(fit)
    a3 = fit.approach("approach3")
    if a3.ok:
        lines.append(f"- **Irreducible loss** (approach 3): E = {with_interval(a3.E, a3.ci.get('E'), '.3f')} nats/token; "
                     f"no budget trains this data below it. L(N, D) = E + {a3.A:.3g}/N^{a3.alpha:.3f}"
                     f" + {a3.B:.3g}/D^{a3.beta:.3f} ({'converged' if a3.converged else 'NOT converged'}).")
    lines += [exponent_line(fit.approach(name)) for name in ORDER if fit.approach(name).status != "missing"]
    a2 = fit.approach("approach2")
    if a2.ok:
        lines += ["", "IsoFLOP minima (approach 2):"]
        lines += [f"- C = {g.flops:.3g} FLOPs: {minimum_words(g)}" if g.flops is not None
                  else f"- C = {g.label}: {minimum_words(g)}" for g in a2.budgets]
    lines += disagreement_lines(fit) + list(noise_lines)
    lines += [f"- warning: {w}" for w in fit.warnings]
    return lines + [""]


def disagreement_lines(fit: FitRecord) -> list[str]:
    """Flag forecasts whose intervals do not overlap between approaches: the fit does not know the
    answer there to better than their disagreement (llm_ray.fitting.validation.disagreements)."""
    lines = []
    for c in fit.budgets:
        at = fit.forecasts_at(c)
        for key, what in (("loss", "loss"), ("n_opt", "N_opt")):
            for a, b in disagreements({name: f.ci.get(key) for name, f in at.items()}):
                lines.append(f"- **The approaches disagree** on {what} at C = {c:.3g}: approach {a[-1]} says "
                             f"{with_interval(getattr(at[a], key), at[a].ci.get(key))}, approach {b[-1]} "
                             f"{with_interval(getattr(at[b], key), at[b].ci.get(key))}; the intervals do not "
                             f"overlap, so the fit does not know the {what} there to better than that "
                             f"(a held-out run, sweep.validate_flops, says which to trust).")
    return lines


def forecast_table(fit: FitRecord) -> list[str]:
    """Per budget: the primary forecast first (bold), then each approach as a diagnostic."""
    if not fit.forecasts:
        return []
    lines = ["| budget C [FLOPs] | forecast | N_opt [params] | D_opt [tokens] | predicted loss L |",
             "|---|---|---|---|---|"]
    for c in fit.budgets:
        p = fit.primary_at(c)
        if p is not None:
            lines.append(f"| **{c:.3g}** | **primary** ({primary_source(p)}) | **{p.n_opt:.3g}** | **{p.d_opt:.3g}** | "
                         f"**{with_interval(p.loss, p.ci, '.4f')}** |")
        at = fit.forecasts_at(c)
        for name in (n for n in ORDER if n in at):
            f = at[name]
            lines.append(f"| {c:.3g} | approach {name[-1]} | {with_interval(f.n_opt, f.ci.get('n_opt'))} | "
                         f"{with_interval(f.d_opt, f.ci.get('d_opt'))} | {with_interval(f.loss, f.ci.get('loss'))} |")
    lines += [""] + primary_lines(fit)
    return lines + [""]


def evaluation_noise_lines(fit: FitRecord, table: pd.DataFrame) -> list[str]:
    """How noisy the measurement of one final loss is, beside how noisy training it is: the median
    standard error over the held-out windows (`loss_se`) against the seed-to-seed sd."""
    if "loss_se" not in table.columns or fit.error:
        return []
    final = table[table["final"].astype(bool)] if "final" in table.columns else table
    se = pd.to_numeric(final["loss_se"], errors="coerce").dropna()
    if se.empty:
        return []
    sd = fit.primary[0].noise_sd if fit.primary else None
    versus = ""
    if sd:
        verdict = ("the held-out windows measure a run more finely than seeds move it" if se.median() < sd / 2
                   else "evaluate on more tokens (trainer.eval_tokens) to measure below the seed noise")
        versus = f", {se.median() / sd:.2f}x the seed-to-seed sd ({sd:.4f}): {verdict}"
    return [f"- Evaluation noise: a final loss's standard error over its held-out windows is {se.median():.4f} "
            f"nats (median over {len(se)} runs; windows of one text are not independent, so a lower bound){versus}."]


def overlap_lines(plan: PlanRecord) -> list[str]:
    """How much validation text the training split already holds (llm_ray.data.overlap), with a warning
    where that is enough to bend the forecasts."""
    if plan.val_lines_in_train is None:
        return []
    warning = overlap_warning(plan.val_lines_in_train)
    return [f"- Validation text already in training: {overlap_words(plan.val_lines_in_train)}."
            + (f" **Warning:** {warning}" if warning else "")]


def primary_source(p: PrimaryForecast) -> str:
    if p.n_from == p.loss_from:
        return f"approach {p.n_from[-1]}"
    return f"N from approach {p.n_from[-1]}, L from approach {p.loss_from[-1]}"


def sd_precision(p: PrimaryForecast, level: float) -> str:
    """How well the replicates pin the seed-to-seed sd down: its degrees of freedom and interval."""
    if not p.noise_dof:
        return ""
    lo, hi = sd_interval(p.noise_sd, p.noise_dof, level)
    more = "; sweep.replicate_minima=2 doubles them" if p.noise_dof < 6 else ""
    return (f"; {p.noise_dof} degrees of freedom, so the sd itself lies within [{lo:.4f}, {hi:.4f}] "
            f"at {100 * level:.0f}%{more}")


def primary_lines(fit: FitRecord) -> list[str]:
    """The primary forecast in words: what to train, what to expect, and the rule that chose it."""
    if not fit.primary:
        return []
    lines = []
    for p in fit.primary:
        lo, hi = p.ci
        lines.append(f"- **Primary forecast at C = {p.flops:.3g}**: train N = {p.n_opt:.3g} on D = {p.d_opt:.3g} "
                     f"tokens, expect L = {p.loss:.4f} within [{lo:.4f}, {hi:.4f}].")
    p = fit.primary[0]
    noise = ("no cell was replicated, so run-to-run noise is not in it" if p.noise_sd is None else
             f"the run-to-run spread (sd {p.noise_sd:.4f} nats, from replicated cells{sd_precision(p, fit.ci_level)}) "
             f"is in it: the noise of one run alone allows ±{100 * noise_allows(p.noise_sd, p.loss, fit.ci_level):.2f}% "
             f"at C = {p.flops:.3g}")
    lines.append(f"- Chosen by the rule `{p.rule}`, fixed before any held-out run: {p.why}. The interval is the "
                 f"bootstrap interval widened by that backtest error carried to each budget "
                 f"({', '.join(f'{100 * q.margin:.2f}%' for q in fit.primary)}); {noise}. The approaches below "
                 f"are diagnostics.")
    return lines


def exponent_line(a: ApproachResult) -> str:
    if not a.ok:
        return f"- {a.label} skipped: {a.reason.removeprefix(a.label + ': ')}"
    ci = a.ci.get("a")
    compare = ("no interval." if not ci else
               "0.5 lies inside the interval." if ci[0] <= CHINCHILLA_EXPONENT <= ci[1] else
               "0.5 lies outside the interval.")
    return (f"- **Exponents** ({a.label}): N_opt ∝ C^{with_interval(a.a, ci)}, "
            f"D_opt ∝ C^{with_interval(a.b, a.ci.get('b'))} (Chinchilla: {CHINCHILLA_EXPONENT} and "
            f"{CHINCHILLA_EXPONENT}); {compare}")


def minimum_words(g: IsoFlopMinimum) -> str:
    if g.n_opt is None:
        return g.note or "no minimum (parabola opens downward or too few sizes)"
    if g.inside:
        return f"minimum at N ≈ {g.n_opt:.3g}, inside the sampled sizes."
    way = "larger" if g.n_max is not None and g.n_opt > g.n_max else "smaller"
    return f"minimum at N ≈ {g.n_opt:.3g} lies OUTSIDE the sampled sizes: widen the ladder toward {way} models."


def cells_section(table: pd.DataFrame, plan: PlanRecord) -> list[str]:
    failed = table[table["status"] != "ok"].drop_duplicates("cell_id")
    lines = ["## Cells", "", f"{table['cell_id'].nunique()} cells planned, {len(failed)} not ok, "
             f"{len(plan.dropped)} dropped at planning.", ""]
    if len(failed):
        lines += ["| cell | status | reason |", "|---|---|---|"]
        lines += [f"| {r.cell_id} | {r.status} | {str(r.reason)[:200]} |" for r in failed.itertuples()]
        lines.append("")
    lines += [f"- dropped at planning: C={d.budget:.3g}, N={d.params}: {d.reason}" for d in plan.dropped]
    final = final_ok(table)
    if len(final):
        lines += ["", "| C [FLOPs] | N | D | D/N | epochs | val loss | spikes | tok/s | MFU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.budget:.3g} | {r.params:,} | {r.tokens:.3g} | {r.tokens / r.params:.1f} | "
                  f"{_num(r.epochs, '.2f')} | {r.loss:.4f} | {_num(r.n_spikes, '.0f')} | {r.tokens_per_s:.0f} | "
                  f"{r.mfu:.2f} |" for r in final.itertuples()]
    return lines


def _num(value, fmt: str) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:{fmt}}"


def plots_section(fit: FitRecord) -> list[str]:
    pngs = list(fit.plots) + ["training_curves.png"] + (["loss_contour.png"] if fit.approach("approach3").ok else [])
    return ["", "## Plots", ""] + [f"![{p}]({p})" for p in pngs]
