"""The fit's figures (matplotlib, Agg backend): one PNG per question a reader asks.

- isoflop.png: are the IsoFLOP profiles parabolas, and do their minima lie inside the sampled sizes?
- n_d_opt.png: N_opt and D_opt versus C from each approach, with bootstrap bands;
- loss_frontier.png: how low the loss gets for a budget C, and the floor E no budget gets under;
- residuals.png: where approach 3's law misses the data.
Notation as everywhere in llm-ray: N = parameters, D = tokens, C = FLOPs, L = loss.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from llm_ray.fitting.predict import frontier_band, frontier_of  # noqa: E402

LABEL_C = "compute C [FLOPs]"
LABEL_N = "parameters N"
LABEL_D = "tokens D"
LABEL_L = "loss L [nats/token]"
STYLE = {"approach1": ("tab:blue", "Approach 1 (envelope)"),
         "approach2": ("tab:orange", "Approach 2 (IsoFLOP)"),
         "approach3": ("tab:green", "Approach 3 (parametric)")}
LINESTYLE = {"approach1": "--", "approach2": "-.", "approach3": "-"}


def make_plots(out) -> dict:
    """name -> Figure for a `pipeline.FitOutcome`; residuals only when approach 3 was fitted."""
    figs = {"isoflop.png": plot_isoflop(out), "n_d_opt.png": plot_n_d_opt(out),
            "loss_frontier.png": plot_loss_frontier(out)}
    if out.parametric is not None:
        figs["residuals.png"] = plot_residuals(out)
    return figs


def _c_range(out):
    c = out.table.points["flops"].to_numpy()
    lo, hi = c.min(), max([c.max(), *out.cfg.predict_flops])
    return np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 200)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _pow10(v: float) -> str:
    """1e19 -> "10¹⁹", 3e18 -> "3×10¹⁸" as plain text (matplotlib's mathtext labels are slow to lay out)."""
    if not v > 0:
        return ""
    e = int(np.floor(np.log10(v) + 1e-9))
    m = v / 10.0**e
    s = "10" + str(e).translate(_SUPERSCRIPT)
    return s if abs(m - 1) < 1e-6 else f"{m:.2g}×{s}"


def _log_axis(axis) -> None:
    """Log-axis labels 10ⁿ at decades; on an axis spanning under 2 decades, also 2×, 3× and 5×10ⁿ."""
    def minor(v, _):
        lo, hi = sorted(axis.get_view_interval())
        m = v / 10.0 ** np.floor(np.log10(v) + 1e-9)
        short = lo > 0 and np.log10(hi / lo) < 2
        return _pow10(v) if short and any(abs(m - k) < 1e-6 for k in (2, 3, 5)) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: _pow10(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _loss_axis(ax):
    """Log scale for L with plain tick labels (2, 2.5, 3 rather than 3x10^0): losses span < 1 decade."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 3.0, 3.5, 4.0,
                                                         5.0, 6.0, 8.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(LABEL_L)


def _finish(fig, out, names, extra=()):
    """tight_layout, with a grey footnote under the axes for skipped approaches (and ``extra`` lines)."""
    notes = [f"{STYLE[n][1]} skipped: {out.skipped[n].split(': ', 1)[-1]}" for n in names if n in out.skipped]
    notes += list(extra)
    text = "\n".join(textwrap.fill(s, 170) for s in notes)
    n_lines = text.count("\n") + 1 if text else 0
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, min(0.3, n_lines * 0.16 / height + (0.01 if n_lines else 0)), 1, 1))
    if text:
        fig.text(0.01, 0.01, text, fontsize=7, color="dimgray", va="bottom")


def plot_isoflop(out):
    fig, ax = plt.subplots(figsize=(9, 6))
    final = out.final
    c_lo, c_hi = final["flops"].min(), final["flops"].max()
    norm = LogNorm(c_lo, c_hi) if c_hi > c_lo * 1.01 else LogNorm(c_lo / 2, c_hi * 2)
    cmap = plt.get_cmap("viridis")
    sc = ax.scatter(final["params"], final["loss"], c=final["flops"], norm=norm, cmap=cmap, s=14, alpha=0.8,
                    label="final loss of a run")
    _log_axis(fig.colorbar(sc, ax=ax, label=LABEL_C).ax.yaxis)
    shown_in = shown_out = drew_unused = False
    if out.isoflop is not None:
        for g in out.isoflop.groups:
            if not g.coef:
                continue
            c2, c1, c0, mid = g.coef
            color = cmap(norm(g.flops))
            lo, hi = np.log(g.n_min), np.log(g.n_max)
            if g.fitted:
                lo, hi = min(lo, np.log(g.n_opt)), max(hi, np.log(g.n_opt))
            u = np.linspace(lo, hi, 100) - mid
            used = g.label in out.isoflop.used
            drew_unused |= not used
            ax.plot(np.exp(u + mid), c0 + c1 * u + c2 * u**2, color=color, lw=1.2, ls="-" if used else ":")
            if g.fitted:
                ax.scatter([g.n_opt], [g.loss_opt], marker="*", s=160, zorder=5,
                           facecolor=color if g.inside else "none", edgecolor="red" if not g.inside else "k",
                           label=None if (shown_in if g.inside else shown_out) else
                           ("parabola minimum" if g.inside else "minimum outside sampled N: widen the ladder"
                            + ("" if used else " (left out of the power law)")))
                shown_in |= g.inside
                shown_out |= not g.inside
    if out.isoflop is not None:
        ax.plot([], [], color="gray", lw=1.2, label="parabola in log N, one per budget C")
    if drew_unused:
        ax.plot([], [], color="gray", lw=1.2, ls=":", label="parabola not used (no minimum / outside sampled N)")
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    _loss_axis(ax)
    ax.set_xlabel(LABEL_N)
    ax.set_title("IsoFLOP profiles: loss L vs parameters N at fixed compute C (" +
                 ("approach 2" if out.isoflop is not None else "approach 2 skipped") + ")")
    ax.legend(loc="best", fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    _finish(fig, out, ["approach2"], ["Budget groups: " + out.grouping])
    return fig


def plot_n_d_opt(out):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    c = _c_range(out)
    k = out.cfg.flops_per_param_token
    level = out.cfg.ci_level
    for name, (color, label) in STYLE.items():
        params = out.params_of(name)
        if params is None:
            continue
        n, d, _ = frontier_of(name, params, c, k)
        if name == "approach3":
            p = out.parametric
            expo = f"a={p.a:.3f}, b={p.b:.3f}"
        else:
            laws = (out.envelope if name == "approach1" else out.isoflop).laws
            expo = f"a={laws.a:.3f}, b={laws.b:.3f}"
        band = frontier_band(name, out.samples.get(name), c, level=level, k=k)
        for j, (ax, y) in enumerate(zip(axes, (n, d))):
            ax.plot(c, y, color=color, lw=1.8, ls=LINESTYLE[name], label=f"{label}: {expo}")
            if band is not None:
                ax.fill_between(c, band[j][0], band[j][1], color=color, alpha=0.15, lw=0)
    # Reference: Chinchilla's rule of thumb D = 20 N under C = k N D (Hoffmann et al. 2022).
    n20 = np.sqrt(c / (k * 20.0))
    for ax, y in zip(axes, (n20, 20.0 * n20)):
        ax.plot(c, y, color="0.45", lw=1.0, ls=(0, (1, 2)), label="Chinchilla reference: D = 20 N")
    if out.envelope is not None:
        e = out.envelope
        axes[0].scatter(e.flops, e.params, s=12, color=STYLE["approach1"][0], alpha=0.7, label="envelope points")
        axes[1].scatter(e.flops, e.tokens, s=12, color=STYLE["approach1"][0], alpha=0.7)
    if out.isoflop is not None:
        used = [g for g in out.isoflop.groups if g.label in out.isoflop.used]
        axes[0].scatter([g.flops for g in used], [g.n_opt for g in used], marker="*", s=90,
                        color=STYLE["approach2"][0], edgecolor="k", zorder=5, label="IsoFLOP minima")
        axes[1].scatter([g.flops for g in used], [g.d_opt for g in used], marker="*", s=90,
                        color=STYLE["approach2"][0], edgecolor="k", zorder=5)
    for cp in out.cfg.predict_flops:
        for ax in axes:
            ax.axvline(cp, color="gray", ls=":", lw=1)
    for ax, ylabel, title in ((axes[0], "N_opt: compute-optimal " + LABEL_N, "N_opt ∝ C^a"),
                              (axes[1], "D_opt: compute-optimal " + LABEL_D, "D_opt ∝ C^b")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
        ax.set_xlabel(LABEL_C)
        ax.set_ylabel(ylabel)
        ax.set_title(f"Compute-optimal allocation: {title}")
        ax.grid(True, which="both", alpha=0.2)
    if out.samples:
        axes[0].fill_between([], [], [], color="gray", alpha=0.3, label=f"shaded: {int(level * 100)}% bootstrap intervals")
    if out.cfg.predict_flops:
        axes[0].plot([], [], color="gray", ls=":", label="requested budgets (fit.predict_flops)")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].legend(fontsize=8, loc="upper left")
    _finish(fig, out, list(STYLE))
    return fig


def plot_loss_frontier(out):
    fig, ax = plt.subplots(figsize=(9, 6))
    c = _c_range(out)
    k = out.cfg.flops_per_param_token
    level = out.cfg.ci_level
    pts = out.table.points
    ax.scatter(pts["flops"], pts["loss"], s=8, color="lightgray", label="measured points")
    shown = [pts["loss"].to_numpy()]  # what sets the y-range: points and forecasts
    if out.envelope is not None:
        ax.scatter(out.envelope.flops, out.envelope.loss, s=14, color=STYLE["approach1"][0],
                   label="lowest loss per compute bin (approach 1)")
    for name in ("approach1", "approach2"):
        params = out.params_of(name)
        if params is not None:
            _, _, l = frontier_of(name, params, c, k)
            ax.plot(c, l, color=STYLE[name][0], ls=LINESTYLE[name], lw=1.2, label=f"{STYLE[name][1]}: L_opt = k_L C^c")
            shown.append(l)
    if out.parametric is not None:
        p = out.parametric
        _, _, l = p.frontier(c)
        ax.plot(c, l, color=STYLE["approach3"][0], lw=2, label="Approach 3: L(N_opt(C), D_opt(C))")
        shown += [l, [p.E]]
        band = frontier_band("approach3", out.samples.get("approach3"), c, level=level, k=k)
        if band is not None:
            ax.fill_between(c, band[2][0], band[2][1], color=STYLE["approach3"][0], alpha=0.2, lw=0,
                            label=f"{int(level * 100)}% bootstrap interval")
        ax.axhline(p.E, color="k", ls=(0, (6, 2, 1, 2)), lw=1.2, label=f"floor E = {p.E:.3f} (approach 3)")
        s = out.samples.get("approach3")
        if s is not None and np.isfinite(s[:, 0]).any():
            lo, hi = np.nanpercentile(s[:, 0], [50 * (1 - level), 50 * (1 + level)])
            ax.axhspan(lo, hi, color="k", alpha=0.08, lw=0, label=f"{int(level * 100)}% interval of E")
    for cp in out.cfg.predict_flops:
        ax.axvline(cp, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    _loss_axis(ax)
    # The y-range follows the points, the forecasts and E itself, not E's interval: an unidentified
    # floor's interval reaches 0 and would flatten everything else into one line at the top.
    y = np.concatenate([np.ravel(v) for v in shown])
    y = y[np.isfinite(y) & (y > 0)]
    ax.set_ylim(0.95 * y.min(), 1.05 * y.max())
    ax.set_xlabel(LABEL_C)
    ax.set_title("Loss on the compute-optimal frontier vs compute C")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, which="both", alpha=0.2)
    _finish(fig, out, list(STYLE))
    return fig


def plot_residuals(out):
    p = out.parametric
    f = out.final
    resid = 100 * (np.log(f["loss"].to_numpy()) - np.log(p.loss(f["params"].to_numpy(), f["tokens"].to_numpy())))
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 1]})
    sc = ax.scatter(f["flops"], resid, c=f["params"], norm=LogNorm(), cmap="plasma", s=14)
    _log_axis(fig.colorbar(sc, ax=ax, label=LABEL_N).ax.yaxis)
    ax.axhline(0, color="k", lw=1)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel(LABEL_C)
    ax.set_ylabel("residual log L − log L(N, D)  [%]")
    ax.set_title(f"Approach 3 residuals (E={p.E:.3f}, A={p.A:.4g}, B={p.B:.4g}, α={p.alpha:.3f}, β={p.beta:.3f})")
    ax.grid(True, alpha=0.2)
    axh.hist(resid, bins=30, orientation="horizontal", color="tab:green", alpha=0.7)
    axh.axhline(0, color="k", lw=1)
    axh.set_xlabel("runs")
    axh.set_ylabel("residual [%]")
    axh.set_title(f"median |residual| = {np.median(np.abs(resid)):.2f}%")
    fig.tight_layout()
    return fig
