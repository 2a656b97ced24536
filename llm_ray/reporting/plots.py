"""The sweep's own figures beside the fit's (llm_ray.reporting.fit_plots): training curves, the fitted
L(N, D) as contours, and several sweeps overlaid. Every figure leaves as PNG bytes through `png`."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from llm_ray.core.records import FitRecord  # noqa: E402
from llm_ray.fitting.config import METRICS  # noqa: E402
from llm_ray.fitting.parametric import frontier, loss_nd  # noqa: E402


def png(fig, tight: bool = True) -> bytes:
    """The one way a figure is saved: 120 dpi PNG bytes, figure closed. `tight=False` for figures
    that laid themselves out (the fit's, with footnotes under their axes)."""
    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def final_ok(table: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run that finished ok: the points of L(N, D)."""
    return table[table["final"] & (table["status"] == "ok")]


def training_curves_png(table: pd.DataFrame) -> bytes:
    """Validation loss vs compute, one line per cell, coloured by model size N."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ok = table[(table["status"] == "ok") & (table["flops"] > 0)]
    if len(ok):
        norm = LogNorm(vmin=ok["params"].min(), vmax=max(ok["params"].max(), ok["params"].min() * 1.01))
        cmap = plt.get_cmap("viridis")
        for _, g in ok.groupby("cell_id"):
            ax.plot(g["flops"], g["loss"], color=cmap(norm(g["params"].iloc[0])), lw=1.2, alpha=0.9)
            ax.scatter(g["flops"].iloc[-1:], g["loss"].iloc[-1:], color=cmap(norm(g["params"].iloc[0])), s=14)
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="parameters N")
    ax.set_xscale("log")
    ax.set_xlabel("compute C [FLOPs]")
    ax.set_ylabel("validation loss L [nats/token]")
    ax.set_title("Training curves (dots: end of each run's schedule)")
    ax.grid(True, which="both", alpha=0.3)
    return png(fig)


def loss_contour_png(table: pd.DataFrame, fit: FitRecord) -> bytes:
    """Contours of the fitted L(N, D) (approach 3), the runs on top, the compute-optimal path and
    lines of constant compute C = k N D."""
    law = np.array(fit.approach("approach3").law())
    k = fit.flops_per_param_token
    ok = final_ok(table)
    n = np.geomspace(ok["params"].min() / 3, ok["params"].max() * 3, 200)
    d = np.geomspace(ok["tokens"].min() / 3, ok["tokens"].max() * 3, 200)
    nn, dd = np.meshgrid(n, d)
    loss = loss_nd(law, nn.ravel(), dd.ravel()).reshape(nn.shape)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cs = ax.contourf(nn, dd, loss, levels=20, cmap="viridis_r")
    fig.colorbar(cs, ax=ax, label="fitted loss L(N, D) [nats/token]")
    ax.contour(nn, dd, loss, levels=cs.levels[::2], colors="k", linewidths=0.4, alpha=0.5)
    # Compute-optimal path: minimise L along C = k N D (closed form, Hoffmann et al. 2022 eq. 4).
    n_opt, d_opt, _ = frontier(law, np.geomspace(k * n[0] * d[0], k * n[-1] * d[-1], 200), k)
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
    return png(fig)


def overlay_png(sweeps: list[tuple[str, pd.DataFrame, FitRecord]], metric: str = "loss") -> bytes:
    """Two or more sweeps on the same axes: IsoFLOP points (left) and the compute-optimal N (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = "osD^v<>"
    for i, (label, table, fit) in enumerate(sweeps):
        color, marker = f"C{i}", markers[i % len(markers)]
        ok = final_ok(table)
        for budget, g in ok.groupby("budget"):
            g = g.sort_values("params")
            left.plot(g["params"], g["loss"], marker=marker, color=color, lw=1, alpha=0.8)
            left.annotate(f"{budget:.2g}", (g["params"].iloc[-1], g["loss"].iloc[-1]), fontsize=7, color=color)
        left.plot([], [], marker=marker, color=color, label=label)
        minima = [m for m in fit.approach("approach2").budgets if m.n_opt]
        if minima:
            right.scatter([m.flops for m in minima], [m.n_opt for m in minima], color=color,
                          marker="*", s=120, label=f"{label}: IsoFLOP minima")
        a3 = fit.approach("approach3")
        if a3.ok and len(ok):
            c = np.geomspace(ok["budget"].min() / 3, ok["budget"].max() * 30, 100)
            right.plot(c, frontier(np.array(a3.law()), c, fit.flops_per_param_token)[0], color=color,
                       label=f"{label}: approach 3, a={a3.a:.2f}")
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel(METRICS[metric])
    left.set_title("IsoFLOP curves (labels: budget C in FLOPs)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("compute C [FLOPs]")
    right.set_ylabel("compute-optimal parameters N_opt")
    right.set_title("Compute-optimal model size")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return png(fig)
