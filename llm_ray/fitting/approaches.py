"""Approaches 1 (envelope) and 2 (IsoFLOP parabolas) of Hoffmann et al. 2022, Sec. 3.1 and 3.2.

Both end in power laws fitted by least squares in log-log space:

    N_opt = k_N * C^a,   D_opt = k_D * C^b,   L_opt = k_L * C^c      (c < 0)

The loss law L_opt(C) is a local description of the measured frontier (a pure power law has no
floor); the floor E comes from approach 3.

Approach 1: among all points of all runs (intermediate evaluations included), the lowest loss reached
in each compute bin of width `bin_dex` in log10 C; bins whose best loss is not below every smaller-
compute bin's are dropped (a bigger budget that did worse is not on the frontier).

Approach 2: within each IsoFLOP group, L is fitted as a parabola in log N; its vertex gives N_opt and
L_opt for the group's C (the geometric mean of its runs' C), and D_opt = C / (k_eff * N_opt) with
k_eff the group's median C / (N D), so that D_opt follows the table's own FLOP ledger. A vertex outside
the sampled N range is an extrapolation: it is reported, and by default left out of the power law.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd


class PowerLaw(NamedTuple):
    """y = k * C^exponent."""

    k: float
    exponent: float

    def __call__(self, c):
        return self.k * np.asarray(c, dtype=np.float64) ** self.exponent


def fit_power_law(c, y, weights=None) -> PowerLaw:
    """Least squares of log y on log C (weights multiply squared residuals)."""
    c, y = np.asarray(c, dtype=np.float64), np.asarray(y, dtype=np.float64)
    assert c.shape == y.shape and len(c) >= 2
    w = None if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    slope, intercept = np.polyfit(np.log(c), np.log(y), 1, w=w)
    return PowerLaw(k=float(np.exp(intercept)), exponent=float(slope))


@dataclass(frozen=True)
class FrontierLaws:
    """The three power laws an approach produces; `a` and `b` are the exponents of N_opt and D_opt."""

    n_law: PowerLaw
    d_law: PowerLaw
    loss_law: PowerLaw

    @property
    def a(self) -> float:
        return self.n_law.exponent

    @property
    def b(self) -> float:
        return self.d_law.exponent

    def vector(self) -> np.ndarray:
        """(log k_N, a, log k_D, b, log k_L, c): the form the bootstrap stores."""
        return np.array([np.log(self.n_law.k), self.a, np.log(self.d_law.k), self.b,
                         np.log(self.loss_law.k), self.loss_law.exponent])


def frontier_from_vector(v: np.ndarray, c):
    """N_opt, D_opt, L_opt at C from (log k_N, a, log k_D, b, log k_L, c) rows (S, 6) or one row."""
    v = np.asarray(v, dtype=np.float64)
    cols = [v[..., i, None] for i in range(6)] if v.ndim > 1 else list(v)
    log_c = np.log(np.asarray(c, dtype=np.float64))
    return tuple(np.exp(cols[2 * j] + cols[2 * j + 1] * log_c) for j in range(3))


@dataclass(frozen=True)
class EnvelopeFit:
    laws: FrontierLaws
    flops: tuple
    """C of the envelope points the laws were fitted on."""
    params: tuple
    tokens: tuple
    loss: tuple


def fit_envelope(flops, params, tokens, loss, *, bin_dex: float = 0.05, min_sizes: int = 3,
                 weights=None) -> EnvelopeFit:
    """Approach 1 on all measured points (rows with weight 0 are left out). The envelope must hold at
    least `min_sizes` distinct model sizes: with fewer, N_opt(C) is a line through one or two sizes
    (one size gives "N_opt ∝ C^0.000", which is no answer)."""
    c, n, d, l = (np.asarray(v, dtype=np.float64) for v in (flops, params, tokens, loss))
    if weights is not None:
        mask = np.asarray(weights) > 0
        c, n, d, l = c[mask], n[mask], d[mask], l[mask]
    if len(c) == 0:
        raise ValueError("approach 1: no points to take the envelope of.")
    bins = np.floor(np.log10(c) / bin_dex).astype(np.int64)
    order = np.lexsort((l, bins))  # by bin, then loss
    first = order[np.r_[True, bins[order][1:] != bins[order][:-1]]]  # lowest loss per bin, C ascending
    best = np.minimum.accumulate(l[first])
    on_frontier = np.r_[True, l[first][1:] < best[:-1]]
    pick = first[on_frontier]
    if len(np.unique(bins[pick])) < 2:
        raise ValueError(f"approach 1: the loss envelope has {len(pick)} compute level(s) ({bin_dex} dex bins); "
                         "it needs 2 or more: measure more budgets or lower fit.envelope_bin_dex.")
    sizes = len(np.unique(n[pick]))
    if sizes < min_sizes:
        raise ValueError(f"approach 1: the loss envelope holds {sizes} distinct model size(s); N_opt(C) needs at "
                         f"least {min_sizes} (fit.envelope_min_sizes): train more sizes per budget.")
    laws = FrontierLaws(fit_power_law(c[pick], n[pick]), fit_power_law(c[pick], d[pick]),
                        fit_power_law(c[pick], l[pick]))
    return EnvelopeFit(laws=laws, flops=tuple(c[pick]), params=tuple(n[pick]), tokens=tuple(d[pick]),
                       loss=tuple(l[pick]))


def group_by_flops(flops, tol_dex: float) -> np.ndarray:
    """Integer group labels: sorted by log10 C, a new group starts where the gap exceeds ``tol_dex``."""
    x = np.log10(np.asarray(flops, dtype=np.float64))
    order = np.argsort(x, kind="stable")
    labels = np.empty(len(x), dtype=np.int64)
    labels[order] = np.cumsum(np.r_[0, np.diff(x[order]) > tol_dex])
    return labels


@dataclass(frozen=True)
class IsoFlopGroup:
    """One budget's parabola L = c0 + c1 u + c2 u^2 with u = log N - log N_mid, and its vertex."""

    label: str
    flops: float
    """C of the group: geometric mean of its runs' C."""
    n_runs: int
    n_sizes: int
    n_min: float
    n_max: float
    fitted: bool
    """False when the group was too small or its parabola opens downwards (see `note`)."""
    n_opt: float = float("nan")
    d_opt: float = float("nan")
    loss_opt: float = float("nan")
    inside: bool = False
    """The vertex lies within the sampled N range [n_min, n_max]."""
    coef: tuple = ()
    """(c2, c1, c0, log N_mid) of the parabola, for plotting."""
    note: str = ""

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("label", "flops", "n_runs", "n_sizes", "n_min", "n_max", "fitted",
                                              "n_opt", "d_opt", "loss_opt", "inside", "note")}
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


@dataclass(frozen=True)
class IsoFlopFit:
    laws: FrontierLaws
    groups: tuple
    """All groups (IsoFlopGroup), fitted or not."""
    used: tuple
    """Labels of the groups whose minima entered the power laws."""


def fit_isoflop_group(label: str, flops, params, tokens, loss, *, min_sizes: int = 3,
                      weights=None) -> IsoFlopGroup:
    """Parabola in log N through one budget group (Hoffmann et al. 2022 Sec. 3.2)."""
    c, n, d, l = (np.asarray(v, dtype=np.float64) for v in (flops, params, tokens, loss))
    w = np.ones_like(c) if weights is None else np.asarray(weights, dtype=np.float64)
    c, n, d, l, w = (v[w > 0] for v in (c, n, d, l, w))
    c_group = float(np.exp(np.mean(np.log(c)))) if len(c) else float("nan")
    base = dict(label=label, flops=c_group, n_runs=int(len(c)), n_sizes=int(len(np.unique(n))),
                n_min=float(n.min()) if len(n) else float("nan"), n_max=float(n.max()) if len(n) else float("nan"))
    if base["n_sizes"] < min_sizes:
        return IsoFlopGroup(**base, fitted=False,
                            note=f"{base['n_sizes']} distinct sizes N < {min_sizes}: no parabola; add sizes to this budget")
    mid = 0.5 * (np.log(n.min()) + np.log(n.max()))
    u = np.log(n) - mid
    c2, c1, c0 = _weighted_quadratic(u, l, w)
    if not c2 > 0:
        return IsoFlopGroup(**base, fitted=False, coef=(c2, c1, c0, mid),
                            note="parabola opens downwards (no minimum): the sizes do not bracket the optimum")
    u_opt = -c1 / (2 * c2)
    loss_opt = float(c0 - c1**2 / (4 * c2))
    if not loss_opt > 0:
        return IsoFlopGroup(**base, fitted=False, coef=(c2, c1, c0, mid),
                            note=f"parabola minimum L = {loss_opt:.3g} is not a loss: too few or too noisy sizes")
    n_opt = float(np.exp(mid + u_opt))
    k_eff = float(np.median(c / (n * d)))
    inside = bool(n.min() <= n_opt <= n.max())
    note = "" if inside else (
        f"minimum N={n_opt:.3g} is outside the sampled sizes [{n.min():.3g}, {n.max():.3g}]: widen the ladder "
        f"towards {'larger' if n_opt > n.max() else 'smaller'} N")
    return IsoFlopGroup(**base, fitted=True, n_opt=n_opt, d_opt=c_group / (k_eff * n_opt),
                        loss_opt=loss_opt, inside=inside, coef=(c2, c1, c0, mid), note=note)


def _weighted_quadratic(u: np.ndarray, l: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """(c2, c1, c0) minimising sum w (l - c0 - c1 u - c2 u^2)^2, by the 3x3 normal equations (u is
    centred, so they are well conditioned; much cheaper than np.polyfit inside the bootstrap)."""
    powers = np.vstack([np.ones_like(u), u, u * u])
    gram = (powers * w) @ powers.T
    c0, c1, c2 = np.linalg.solve(gram, (powers * w) @ l)
    return float(c2), float(c1), float(c0)


def fit_isoflop(flops, params, tokens, loss, groups: Sequence, *, min_sizes: int = 3,
                exclude_edge_minima: bool = True, weights=None) -> IsoFlopFit:
    """Approach 2: a parabola per budget group, then power laws through the minima."""
    c, n, d, l = (np.asarray(v, dtype=np.float64) for v in (flops, params, tokens, loss))
    groups = np.asarray(groups)
    w = np.ones_like(c) if weights is None else np.asarray(weights, dtype=np.float64)
    labels = list(dict.fromkeys(groups[np.argsort(c, kind="stable")]))  # by C, ascending
    if len(labels) < 2:
        raise ValueError(f"approach 2: {len(labels)} budget group; IsoFLOP fits need at least 2 budgets "
                         "(add budgets to the sweep, or check fit.columns.budget / fit.flops_group_dex).")
    fitted = []
    for lab in labels:
        m = groups == lab
        fitted.append(fit_isoflop_group(str(lab), c[m], n[m], d[m], l[m], min_sizes=min_sizes, weights=w[m]))
    used = [g for g in fitted if g.fitted and (g.inside or not exclude_edge_minima)]
    if len(used) < 2:
        reasons = "; ".join(f"{g.label}: {g.note}" for g in fitted if g.note)
        raise ValueError(f"approach 2: {len(used)} of {len(fitted)} budgets give a usable minimum, at least 2 "
                         f"are needed ({reasons}).")
    cs = np.array([g.flops for g in used])
    laws = FrontierLaws(fit_power_law(cs, [g.n_opt for g in used]), fit_power_law(cs, [g.d_opt for g in used]),
                        fit_power_law(cs, [g.loss_opt for g in used]))
    return IsoFlopFit(laws=laws, groups=tuple(fitted), used=tuple(g.label for g in used))


def profile_bumps(params, loss, groups, *, margin: float = 0.0) -> dict:
    """Sizes whose mean final loss lies more than `margin` above both neighbouring sizes of the same
    budget group: N -> [(group label, excess in nats), ...]. An IsoFLOP profile has one minimum
    (Hoffmann et al. 2022, Fig. 3), so a size above both neighbours at several budgets trained worse
    than its place on the ladder says (an unlucky initialisation, which every budget of that size shares
    under one trainer.seed, or a recipe that does not suit that shape) and bends every parabola it is in."""
    frame = pd.DataFrame({"n": np.asarray(params, dtype=np.float64), "l": np.asarray(loss, dtype=np.float64),
                          "g": np.asarray(groups)})
    bumps: dict = {}
    for label, g in frame.groupby("g", sort=False):
        means = g.groupby("n")["l"].mean().sort_index()
        n, l = means.index.to_numpy(), means.to_numpy()
        for i in range(1, len(n) - 1):
            excess = float(l[i] - max(l[i - 1], l[i + 1]))
            if excess > margin:
                bumps.setdefault(float(n[i]), []).append((str(label), excess))
    return bumps


def budget_groups(flops, budget: Optional[Sequence], tol_dex: float) -> tuple[np.ndarray, str]:
    """Group labels for approach 2 and a sentence saying how they were made."""
    if budget is not None:
        return np.asarray([str(b) for b in budget]), "by the budget column"
    ids = group_by_flops(flops, tol_dex)
    log_c = np.log(np.asarray(flops, dtype=np.float64))
    names: dict[int, str] = {}
    for i in np.unique(ids):
        name = f"C~{np.exp(log_c[ids == i].mean()):.3g}"
        names[int(i)] = name if name not in names.values() else f"{name}#{i}"
    return np.asarray([names[int(i)] for i in ids]), (
        f"no budget column: runs grouped by log10 C, a new group where sorted log10 C jumps by more "
        f"than {tol_dex} (fit.flops_group_dex)")
