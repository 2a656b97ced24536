"""Numbers as a person reads them: one way to write a value with its interval, and the fit's summary."""

from __future__ import annotations

from typing import Optional

from llm_ray.core.records import APPROACHES, FitRecord

TITLES = {"approach1": "Approach 1 (envelope)", "approach2": "Approach 2 (IsoFLOP)",
          "approach3": "Approach 3 (parametric)"}


def with_interval(value: Optional[float], ci, fmt: str = ".3g") -> str:
    """`3.52 [3.37, 3.59]`; `n/a` without a value; no brackets without an interval."""
    if value is None:
        return "n/a"

    def number(x: float) -> str:  # a bound a wild bootstrap put at 1e213 in 3 digits, not 214
        return f"{x:.3g}" if fmt.endswith("f") and abs(x) >= 1e6 else f"{x:{fmt}}"

    return number(value) + (f" [{number(ci[0])}, {number(ci[1])}]" if ci else "")


def format_fit_summary(fit: FitRecord) -> str:
    """A few lines a person reads: the law, the exponents, and what to train for each requested C."""
    lines = [f"points: {fit.n_used} used ({fit.n_runs} runs), {fit.n_excluded} excluded "
             f"{fit.excluded or ''}".rstrip()]
    if fit.n_resamples:
        lines.append(f"intervals: {int(round(100 * fit.ci_level))}% bootstrap ({fit.n_resamples} resamples)")
    for name in APPROACHES:
        lines.append(_approach_line(fit, name))
    for c in fit.budgets:
        lines.append(f"C = {c:.3g} FLOPs:")
        p = fit.primary_at(c)
        if p is not None:
            lines.append(f"    PRIMARY (rule {p.rule}: N from {p.n_from}, L from {p.loss_from}): train N = {p.n_opt:.3g} "
                         f"on D = {p.d_opt:.3g}, expect L = {with_interval(p.loss, p.ci, '.4f')}")
        for name, f in fit.forecasts_at(c).items():
            lines.append(f"    {name}: N_opt = {with_interval(f.n_opt, f.ci.get('n_opt'))}, "
                         f"D_opt = {with_interval(f.d_opt, f.ci.get('d_opt'))}, "
                         f"L = {with_interval(f.loss, f.ci.get('loss'), '.4f')}")
    for p in fit.point_forecasts:
        lines.append(f"L(N={p.params:.3g}, D={p.tokens:.3g}) = {with_interval(p.loss, p.ci, '.4f')}")
    lines.extend(f"warning: {w}" for w in fit.warnings)
    return "\n".join(lines)


def _approach_line(fit: FitRecord, name: str) -> str:
    a = fit.approach(name)
    if not a.ok:
        return f"{TITLES[name]}: skipped: {a.reason}"
    text = (f"{TITLES[name]}: a = {with_interval(a.a, a.ci.get('a'), '.4f')}, "
            f"b = {with_interval(a.b, a.ci.get('b'), '.4f')}")
    if name == "approach3":
        text += (f"\n    L(N, D) = E + A/N^alpha + B/D^beta: E = {with_interval(a.E, a.ci.get('E'), '.4f')}, "
                 f"A = {with_interval(a.A, a.ci.get('A'), '.4g')}, B = {with_interval(a.B, a.ci.get('B'), '.4g')}, "
                 f"alpha = {with_interval(a.alpha, a.ci.get('alpha'), '.4f')}, "
                 f"beta = {with_interval(a.beta, a.ci.get('beta'), '.4f')}"
                 f"\n    converged: {a.converged} (max|grad| = {a.grad_norm:.2g})")
    return text
