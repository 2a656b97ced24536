"""The sweep's answer, in words and pictures: fit.json, PNG plots and report.md.

    python -m llm_ray.report sweep_dir=/abs/runs/isoflop      # re-draw from results.parquet

Reads only the results table and the plan (never Ray or torch): a report can be remade, or a fit
redone with other settings, without retraining.
"""

from __future__ import annotations

import dataclasses
import io
import math

import pandas as pd

from llm_ray import storage

CHINCHILLA_EXPONENT = 0.5  # Hoffmann et al. 2022: N_opt and D_opt both grow as ~C^0.5


def fit_and_report(sweep_dir: str, table: pd.DataFrame, fit_cfg, plan: dict, log=print) -> dict:
    """Fit the sweep's table (the exact ledger's C / (N D) as the closed form's factor) and write
    fit.json, the plots and report.md into `sweep_dir`."""
    from llm_ray.fitting import run_fit

    ok = table[table["status"] == "ok"]
    if len(ok):
        k = float((ok["flops"] / (ok["params"] * ok["tokens"])).median())
        fit_cfg = dataclasses.replace(fit_cfg, flops_per_param_token=k)
    try:
        fit = run_fit(table, sweep_dir, fit_cfg)
    except ValueError as err:
        fit = {"error": str(err)}
        log(f"fit: not possible: {err}")
    storage.write_bytes_atomic(storage.join(sweep_dir, "training_curves.png"), training_curves_png(table))
    text = render_report(fit, table, plan)
    storage.write_bytes_atomic(storage.join(sweep_dir, "report.md"), text.encode())
    log(text.split("\n## ")[0])  # the answer, on the console too
    return {"report": storage.join(sweep_dir, "report.md"), "fit": fit}


def _ci(entry: dict, key: str) -> str:
    ci = (entry.get("ci") or {}).get(key)
    return f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else ""


def _fmt_pred(p: dict | None, key: str) -> str:
    if not p or p.get(key) is None:
        return "n/a"
    ci = (p.get("ci") or {}).get(key)
    return f"{p[key]:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else "")


def render_report(fit: dict, table: pd.DataFrame, plan: dict) -> str:
    name = plan["sweep"]["name"]
    lines = [f"# Scaling-law report: sweep `{name}`", ""]
    if "error" in fit:
        lines += [f"**No fit was possible:** {fit['error']}", ""]
    else:
        a3, a2, a1 = fit.get("approach3", {}), fit.get("approach2", {}), fit.get("approach1", {})
        level = int(round(100 * fit["bootstrap"]["level"]))
        lines += ["## The answer", "",
                  f"Intervals are {level}% bootstrap intervals over runs "
                  f"({fit['bootstrap']['n_resamples']} resamples).", ""]
        if fit.get("predictions"):
            lines += ["| budget C [FLOPs] | approach | N_opt [params] | D_opt [tokens] | predicted loss L |",
                      "|---|---|---|---|---|"]
            for row in fit["predictions"]:
                for ap in ("approach3", "approach2", "approach1"):
                    p = row.get(ap)
                    if p:
                        lines.append(f"| {row['flops']:.3g} | {ap[-1]} | {_fmt_pred(p, 'n_opt')} | "
                                     f"{_fmt_pred(p, 'd_opt')} | {_fmt_pred(p, 'loss')} |")
            lines.append("")
        if a3.get("status") == "ok":
            lines.append(f"- **Irreducible loss** (approach 3): E = {a3['E']:.3f}{_ci(a3, 'E')} nats/token; "
                         f"no budget trains this data below it. L(N, D) = E + {a3['A']:.3g}/N^{a3['alpha']:.3f}"
                         f" + {a3['B']:.3g}/D^{a3['beta']:.3f}"
                         f" ({'converged' if a3['converged'] else 'NOT converged'}).")
        for label, entry in (("approach 3", a3), ("approach 2", a2), ("approach 1", a1)):
            if entry.get("status") == "ok":
                lines.append(f"- **Exponents** ({label}): N_opt ∝ C^{entry['a']:.3f}{_ci(entry, 'a')}, "
                             f"D_opt ∝ C^{entry['b']:.3f}{_ci(entry, 'b')} (Chinchilla: "
                             f"{CHINCHILLA_EXPONENT} and {CHINCHILLA_EXPONENT}); "
                             + _compare(entry))
            elif entry:
                lines.append(f"- {label} skipped: {entry.get('reason')}")
        if a2.get("status") == "ok":
            lines.append("")
            lines.append("IsoFLOP minima (approach 2):")
            for g in a2.get("budgets", []):
                lines.append(f"- C = {g.get('label')}: " + _minimum_words(g))
        for w in fit.get("warnings", []):
            lines.append(f"- warning: {w}")
        lines.append("")
    failed = table[table["status"] != "ok"].drop_duplicates("cell_id")
    lines += ["## Cells", "",
              f"{table['cell_id'].nunique()} cells planned, {len(failed)} not ok, "
              f"{len(plan.get('dropped', []))} dropped at planning.", ""]
    if len(failed):
        lines += ["| cell | status | reason |", "|---|---|---|"]
        lines += [f"| {r.cell_id} | {r.status} | {str(r.reason)[:200]} |" for r in failed.itertuples()]
        lines.append("")
    for d in plan.get("dropped", []):
        lines.append(f"- dropped at planning: C={d['budget']:.3g}, N={d['params']}: {d['reason']}")
    final = table[table["final"] & (table["status"] == "ok")]
    if len(final):
        lines += ["", "| C [FLOPs] | N | D | D/N | val loss | tok/s | MFU |", "|---|---|---|---|---|---|---|"]
        for r in final.itertuples():
            lines.append(f"| {r.budget:.3g} | {r.params:,} | {r.tokens:.3g} | {r.tokens / r.params:.1f} | "
                         f"{r.loss:.4f} | {r.tokens_per_s:.0f} | {r.mfu:.2f} |")
    lines += ["", "## Plots", ""]
    for png in (fit.get("plots") or []) + ["training_curves.png"]:
        lines.append(f"![{png}]({png})")
    return "\n".join(lines) + "\n"


def _compare(entry: dict) -> str:
    ci = (entry.get("ci") or {}).get("a")
    if ci and None not in ci:
        inside = ci[0] <= CHINCHILLA_EXPONENT <= ci[1]
        return "0.5 lies inside the interval." if inside else "0.5 lies outside the interval."
    return "no interval."


def _minimum_words(g: dict) -> str:
    n = g.get("n_opt")
    if n is None:
        return g.get("note") or "no minimum (parabola opens downward or too few sizes)"
    if g.get("inside"):
        return f"minimum at N ≈ {n:.3g}, inside the sampled sizes."
    lo, hi = g.get("n_min"), g.get("n_max")
    way = "larger" if hi is not None and n > hi else "smaller"
    return f"minimum at N ≈ {n:.3g} lies OUTSIDE the sampled sizes: widen the ladder toward {way} models."


def training_curves_png(table: pd.DataFrame) -> bytes:
    """Validation loss vs compute, one line per cell, coloured by model size N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(7.5, 5))
    ok = table[(table["status"] == "ok") & (table["flops"] > 0)]
    if len(ok):
        norm = LogNorm(vmin=ok["params"].min(), vmax=max(ok["params"].max(), ok["params"].min() * 1.01))
        cmap = plt.get_cmap("viridis")
        for _, g in ok.groupby("cell_id"):
            ax.plot(g["flops"], g["loss"], color=cmap(norm(g["params"].iloc[0])), lw=1.2, alpha=0.9)
            ax.scatter(g["flops"].iloc[-1:], g["loss"].iloc[-1:], color=cmap(norm(g["params"].iloc[0])), s=14)
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="parameters N")
    ax.set_xscale("log")
    ax.set_xlabel("compute C [FLOPs]")
    ax.set_ylabel("validation loss L [nats/token]")
    ax.set_title("Training curves (dots: end of each run's schedule)")
    ax.grid(True, which="both", alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
