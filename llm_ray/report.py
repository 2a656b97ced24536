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


def fit_and_report(sweep_dir: str, table: pd.DataFrame, fit_cfg, plan: dict, log=print,
                   wandb_cfg=None) -> dict:
    """Fit the sweep's table (the exact ledger's C / (N D) as the closed form's factor) and write
    fit.json, the plots and report.md into `sweep_dir`; with `wandb_cfg`, also the sweep's W&B
    `fit` run."""
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
    if (fit.get("approach3") or {}).get("status") == "ok":
        storage.write_bytes_atomic(storage.join(sweep_dir, "loss_contour.png"), loss_contour_png(table, fit))
    text = render_report(fit, table, plan)
    storage.write_bytes_atomic(storage.join(sweep_dir, "report.md"), text.encode())
    log(text.split("\n## Cells")[0])  # the answer, on the console too
    if wandb_cfg is not None:
        from llm_ray.tracking import log_fit_run

        log_fit_run(wandb_cfg, sweep_name=plan["sweep"]["name"], sweep_dir=sweep_dir, table=table, fit=fit,
                    directory=wandb_cfg.dir)
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
                lines.append(f"- {label} skipped: {str(entry.get('reason')).removeprefix(label + ': ')}")
        if a2.get("status") == "ok":
            lines.append("")
            lines.append("IsoFLOP minima (approach 2):")
            for g in a2.get("budgets", []):
                c = g.get("flops")
                lines.append(f"- C = {c:.3g} FLOPs: " if isinstance(c, (int, float)) else f"- C = {g.get('label')}: ")
                lines[-1] += _minimum_words(g)
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
    extra = ["training_curves.png"] + (["loss_contour.png"] if (fit.get("approach3") or {}).get("status") == "ok" else [])
    for png in (fit.get("plots") or []) + extra:
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


def loss_contour_png(table: pd.DataFrame, fit: dict) -> bytes:
    """Contours of the fitted L(N, D) (approach 3), the runs on top, the compute-optimal path and
    lines of constant compute C = k N D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    p = fit["approach3"]
    k = fit["config"]["flops_per_param_token"]
    ok = table[table["final"] & (table["status"] == "ok")]
    n = np.geomspace(ok["params"].min() / 3, ok["params"].max() * 3, 200)
    d = np.geomspace(ok["tokens"].min() / 3, ok["tokens"].max() * 3, 200)
    nn, dd = np.meshgrid(n, d)
    loss = p["E"] + p["A"] / nn ** p["alpha"] + p["B"] / dd ** p["beta"]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cs = ax.contourf(nn, dd, loss, levels=20, cmap="viridis_r")
    fig.colorbar(cs, ax=ax, label="fitted loss L(N, D) [nats/token]")
    ax.contour(nn, dd, loss, levels=cs.levels[::2], colors="k", linewidths=0.4, alpha=0.5)
    # Compute-optimal path: minimise L along C = k N D (closed form, Hoffmann et al. 2022 eq. 4).
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    c = np.geomspace(k * n[0] * d[0], k * n[-1] * d[-1], 200)
    n_opt = g * (c / k) ** (p["beta"] / (p["alpha"] + p["beta"]))
    d_opt = c / (k * n_opt)
    ax.plot(n_opt, d_opt, color="red", lw=2, label="compute-optimal path N_opt(C), D_opt(C)")
    for budget in sorted(ok["budget"].unique()):
        line = budget / (k * n)
        ax.plot(n, line, color="white", lw=0.8, ls="--")
        seen = np.flatnonzero((line > d[0]) & (line < d[-1]))
        if len(seen):  # label each constant-C line where it is on the axes
            i = seen[len(seen) // 4]
            ax.annotate(f"C={budget:.2g}", (n[i], line[i]), color="white", fontsize=7)
    ax.scatter(ok["params"], ok["tokens"], c="white", edgecolors="k", s=28, zorder=5, label="runs (final points)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n[0], n[-1])
    ax.set_ylim(d[0], d[-1])
    ax.set_xlabel("parameters N")
    ax.set_ylabel("tokens D")
    ax.set_title("Fitted L(N, D) = E + A/N^alpha + B/D^beta; dashed: constant compute C")
    ax.legend(loc="lower left", fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def overlay_png(sweeps: list[tuple[str, pd.DataFrame, dict]]) -> bytes:
    """Two or more sweeps on the same axes: IsoFLOP points (left) and the compute-optimal N (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = "osD^v<>"
    for i, (label, table, fit) in enumerate(sweeps):
        color = f"C{i}"
        ok = table[table["final"] & (table["status"] == "ok")]
        for budget, g in ok.groupby("budget"):
            g = g.sort_values("params")
            left.plot(g["params"], g["loss"], marker=markers[i % len(markers)], color=color, lw=1, alpha=0.8)
            left.annotate(f"{budget:.2g}", (g["params"].iloc[-1], g["loss"].iloc[-1]), fontsize=7, color=color)
        left.plot([], [], marker=markers[i % len(markers)], color=color, label=label)
        minima = [m for m in ((fit.get("approach2") or {}).get("budgets") or []) if m.get("n_opt")]
        if minima:
            right.scatter([m["flops"] for m in minima], [m["n_opt"] for m in minima], color=color,
                          marker="*", s=120, label=f"{label}: IsoFLOP minima")
        a3 = fit.get("approach3") or {}
        if a3.get("status") == "ok" and len(ok):
            k = fit["config"]["flops_per_param_token"]
            c = np.geomspace(ok["budget"].min() / 3, ok["budget"].max() * 30, 100)
            g_ = (a3["alpha"] * a3["A"] / (a3["beta"] * a3["B"])) ** (1 / (a3["alpha"] + a3["beta"]))
            right.plot(c, g_ * (c / k) ** a3["a"], color=color, label=f"{label}: approach 3, a={a3['a']:.2f}")
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("final validation loss L [nats/token]")
    left.set_title("IsoFLOP curves (labels: budget C in FLOPs)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("compute C [FLOPs]")
    right.set_ylabel("compute-optimal parameters N_opt")
    right.set_title("Compute-optimal model size")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def redraw(sweep_dirs: list[str], fit_cfg, out_dir: str | None = None, log=print) -> dict:
    """Re-fit and re-draw each sweep from its results.parquet; overlay them when there are several."""
    from llm_ray.results import read_results

    done = []
    for d in sweep_dirs:
        d = storage.to_local_or_url(d)
        if not storage.exists(storage.join(d, "results.parquet")):
            raise ValueError(f"sweep_dir={d!r} holds no results.parquet: give the directory a sweep wrote "
                             f"(printed as 'sweep directory:' at its end).")
        table = read_results(d)
        plan = storage.read_json(storage.join(d, "plan.json"))
        cfg = dataclasses.replace(fit_cfg, predict_flops=list(fit_cfg.predict_flops)
                                  or list(plan["sweep"]["predict_flops"]))
        summary = fit_and_report(d, table, cfg, plan, log=log)
        done.append((plan["sweep"]["name"], table, summary["fit"]))
        log(f"report: {summary['report']}")
    if len(done) > 1:
        out = storage.to_local_or_url(out_dir or storage.join(storage.to_local_or_url(sweep_dirs[0]), "compare"))
        storage.write_bytes_atomic(storage.join(out, "overlay.png"), overlay_png(done))
        lines = ["# Sweeps compared", ""]
        for (name, _, fit), d in zip(done, sweep_dirs):
            a3 = fit.get("approach3") or {}
            words = (f"E = {a3['E']:.3f}, a = {a3['a']:.3f}, b = {a3['b']:.3f}" if a3.get("status") == "ok"
                     else "approach 3 not available")
            lines.append(f"- `{name}` ({d}): {words}")
        lines += ["", "![overlay](overlay.png)", ""]
        storage.write_bytes_atomic(storage.join(out, "compare.md"), "\n".join(lines).encode())
        log(f"overlay: {storage.join(out, 'overlay.png')}")
        return {"compare": out}
    return {}


def _argv_sweep_list(argv: list[str]) -> list[str]:
    """Let `sweep_dir=A,B` mean a list: Hydra would read a bare comma as a multirun sweep."""
    return [f"sweep_dir=[{a.split('=', 1)[1]}]" if a.startswith("sweep_dir=") and "," in a
            and not a.split("=", 1)[1].startswith("[") else a for a in argv]


def main() -> None:
    import sys

    import hydra
    from omegaconf import OmegaConf

    from llm_ray.fit import register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path="../conf", config_name="report")
    def app(cfg) -> None:
        dirs = cfg.sweep_dir if OmegaConf.is_list(cfg.sweep_dir) else [cfg.sweep_dir]
        redraw([str(d) for d in dirs], OmegaConf.to_object(cfg.fit), cfg.out_dir)

    sys.argv = _argv_sweep_list(sys.argv)
    app()


if __name__ == "__main__":
    main()
