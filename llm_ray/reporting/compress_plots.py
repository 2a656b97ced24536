"""The compression stage's figures (PNG bytes through `llm_ray.reporting.plots.png`):
Δloss vs D/N per method with the fitted laws, loss vs model bytes with one frontier per precision, and
loss vs sparsity per model size."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from llm_ray.core.compression import BASELINE
from llm_ray.reporting.plots import png


def _size_colours(table: pd.DataFrame):
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    norm = LogNorm(vmin=table["params"].min(), vmax=max(table["params"].max(), table["params"].min() * 1.01))
    return norm, plt.get_cmap("viridis")


def delta_png(table: pd.DataFrame, laws: list, floor: float) -> Optional[bytes]:
    """One panel per setting: Δloss vs D/N, coloured by N; points at or below the fitting floor drawn
    hollow at the floor; the setting's fitted power law as one dashed line per model size."""
    import matplotlib.pyplot as plt

    shown = [s for s in dict.fromkeys(table["setting_id"]) if s != BASELINE]
    if not shown:
        return None
    by_name = {law.name: law for law in laws if law.ok and law.form == "power"}
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 1.2, 2.9 * rows + 0.6), squeeze=False,
                             layout="constrained")
    norm, cmap = _size_colours(table)
    for ax, setting_id in zip(axes.flat, shown):
        g = table[table["setting_id"] == setting_id]
        above = g["delta_loss"] > floor
        ax.scatter(g.loc[above, "tokens_per_param"], g.loc[above, "delta_loss"], c=cmap(norm(g.loc[above, "params"])),
                   s=22, edgecolors="k", linewidths=0.3, zorder=3)
        ax.scatter(g.loc[~above, "tokens_per_param"], np.full((~above).sum(), floor), facecolors="none",
                   edgecolors=cmap(norm(g.loc[~above, "params"])), s=22, zorder=3)
        law = by_name.get(setting_id)
        if law is not None:
            for n, gn in g.groupby("params"):
                dn = np.geomspace(gn["tokens_per_param"].min() * 0.8, gn["tokens_per_param"].max() * 1.25, 20)
                ax.plot(dn, law.predict(n, dn * n), color=cmap(norm(n)), ls="--", lw=1)
            ax.text(0.03, 0.95, f"γ_D={law.params['gamma_D']:.2f}, γ_N={law.params['gamma_N']:.2f}",
                    transform=ax.transAxes, fontsize=7, va="top")
        if (~above).any():
            ax.axhline(floor, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(g["label"].iloc[0], fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("tokens per parameter D/N")
    for ax in axes[:, 0]:
        ax.set_ylabel("Δloss [nats]")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="parameters N", shrink=0.6)
    fig.suptitle("Loss added by each compression vs D/N: points, the cells; dashed, the fitted δ = C D^γ_D / N^γ_N "
                 f"per size N;\nhollow on the dotted line: Δ ≤ {floor:g} nats (not fitted)", fontsize=10)
    return png(fig, tight=False)


def frontier(bytes_: pd.Series, loss: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope: the lowest loss reachable at each size or less."""
    order = np.argsort(bytes_.to_numpy(), kind="stable")
    return bytes_.to_numpy()[order], np.minimum.accumulate(loss.to_numpy()[order])


def memory_png(table: pd.DataFrame, budgets: list[float]) -> bytes:
    """Validation loss vs model bytes: every (cell, setting) as a point, one frontier per precision
    (fp32, int8, int4, ...) and one for the pruned models; the report's budgets as dotted lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    quant = table[table["sparsity"] == 0]
    precisions = sorted(quant["precision"].unique(), key=lambda p: -32 if p == BASELINE else -int(p[3:]))
    for i, p in enumerate(precisions):
        g = quant[quant["precision"] == p]
        ax.scatter(g["bytes"], g["val_loss"], color=f"C{i}", s=16, alpha=0.7)
        x, y = frontier(g["bytes"], g["val_loss"])
        ax.step(x, y, where="post", color=f"C{i}", lw=1.8, label=f"{p} frontier")
    pruned = table[table["sparsity"] > 0]
    if len(pruned):
        ax.scatter(pruned["bytes"], pruned["val_loss"], color="grey", marker="x", s=14, alpha=0.6)
        x, y = frontier(pruned["bytes"], pruned["val_loss"])
        ax.step(x, y, where="post", color="grey", lw=1.2, ls="--", label="pruned (fp32 values) frontier")
    for b in budgets:
        ax.axvline(b, color="k", lw=0.5, ls=":", alpha=0.5)
    ax.set_xscale("log")
    ax.set_ylim(table["val_loss"].min() - 0.1, min(table["val_loss"].max(), table["base_val_loss"].max() + 1.5) + 0.1)
    ax.set_xlabel("model size [bytes] (dotted: the report's budgets)")
    ax.set_ylabel("validation loss L [nats/token]")
    ax.set_title("Best model for a memory budget: loss vs model bytes, one frontier per precision")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def sparsity_png(table: pd.DataFrame) -> Optional[bytes]:
    """Validation loss vs sparsity, one line per cell coloured by its size N, one panel per
    unstructured method; 2:4 as a star at 50%."""
    import matplotlib.pyplot as plt

    methods = [m for m in ("prune_global", "prune_layer") if m in set(table["method"])]
    semi = table[table["method"] == "prune_2_4"]
    if not methods and not len(semi):
        return None
    methods = methods or ["prune_2_4"]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods) + 1, 4.6), squeeze=False, sharey=True,
                             layout="constrained")
    styles = dict(zip(sorted(table["budget"].unique()), ["-", "--", ":", "-."] * 10))
    norm, cmap = _size_colours(table)
    dense = table[table["method"] == BASELINE].set_index("cell_id")
    for ax, method in zip(axes[0], methods):
        for cell_id, g in table[table["method"] == method].groupby("cell_id"):
            g = g.sort_values("sparsity")
            colour = cmap(norm(g["params"].iloc[0]))
            ax.plot([0.0, *g["sparsity"]], [dense.at[cell_id, "val_loss"], *g["val_loss"]], color=colour, lw=1,
                    marker="o", ms=3, ls=styles[g["budget"].iloc[0]])
        ax.scatter(semi["sparsity"], semi["val_loss"], c=cmap(norm(semi["params"])), marker="*", s=70,
                   edgecolors="k", linewidths=0.4, zorder=4, label="2:4 semi-structured")
        for budget, style in styles.items():
            ax.plot([], [], color="grey", ls=style, label=f"C = {budget:.3g} FLOPs")
        ax.set_title({"prune_global": "global magnitude pruning", "prune_layer": "per-layer magnitude pruning",
                      "prune_2_4": "2:4 semi-structured"}[method], fontsize=10)
        ax.set_xlabel("sparsity S (fraction of target weights zero)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0, 0].set_ylabel("validation loss L [nats/token]")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="parameters N")
    fig.suptitle("Loss vs sparsity after magnitude pruning, one line per cell (colour: size N; line: training budget C)",
                 fontsize=10)
    return png(fig, tight=False)
