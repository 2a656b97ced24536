"""What is variant B worth in compute? The compute-equivalent multiplier of two sweeps' frontiers.

    k(C) = C_A(L_B(C)) / C

is how much more compute variant A needs to reach the loss B reaches with C (k > 1: B is better;
k = 1.5: B's change is worth 50% more compute): the "effective compute" of algorithmic progress
(Ho et al. 2024). DeepSeek LLM (Bi et al. 2024, Sec. 3) fits IsoFLOP laws per dataset and reads the
shift of N_opt; Marin runs one IsoFLOP suite per recipe or data mix and reads the frontiers side by
side: this turns such an overlay into a number with an interval.

The estimator, all vectorised over bootstrap replicates (milliseconds for hundreds of them):
1. each budget's IsoFLOP parabola in log N and its vertex (Hoffmann et al. 2022, Sec. 3.2, as
   approach 2 fits it): the frontier points (C_g, L_opt, N_opt) of each sweep;
2. A's frontier log L = l + c u + q u^2 in u = log C (q = 0, a power law, with fewer than 4 budgets):
   a real frontier bends towards its floor E, and a straight line through two decades of it would
   give a constant multiplier a spurious trend (curvature ~ gamma^2 (E/L)(1 - E/L) per (ln C)^2);
3. at each of B's budgets, B's measured minimum put through the inverse of A's frontier:
   log k = u_A(log L_B) - log C (at a budget only A has, k is the trend's);
4. the trend: log k = kappa + s log C by least squares over B's budgets whose loss lies within A's
   measured minima (beyond them A's frontier is extrapolated); s = 0 is a
   constant gain, s < 0 a fading one (k shrinks by 10^s per decade). Carried to a target budget,
   its interval holds the slope's uncertainty times the distance: the honest width.

Intervals: bootstrap over runs of both sweeps, drawn independently; the bias-corrected percentile
interval expanded for the residual degrees of freedom (`expanded_interval`). The default resamples
each run's *residual* from its budget's parabola (modified residuals r / sqrt(1 - h), pooled over the
sweep; Davison & Hinkley 1997, Sec. 6.2.3): resampling the runs themselves (`resample="runs"`, the
fitter's own bootstrap, `draw_run_counts`) leaves a 5-size parabola with under 3 distinct sizes in
~10% of draws. Calibration: tests/test_compare_math.py.

Pure numpy (no Ray, torch, W&B or Hydra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit

from llm_ray.core.comparison import CompareConfig
from llm_ray.fitting.bootstrap import draw_run_counts, percentile_interval

CURVED_MIN_BUDGETS = 4
"""A's frontier is fitted with curvature from this many usable budgets on (a power law below)."""


class SweepPoints(NamedTuple):
    """One sweep's finished runs (their final evaluations): what the comparison reads."""

    flops: np.ndarray
    params: np.ndarray
    loss: np.ndarray
    """Held-out loss (nats per token), or bits per byte when the two sweeps' tokenizers differ."""
    group: np.ndarray
    """Budget index 0..G-1, budgets in ascending C."""

    @classmethod
    def from_arrays(cls, flops, params, loss, budget) -> "SweepPoints":
        budget = np.asarray(budget, dtype=np.float64)
        levels = np.unique(budget)
        return cls(np.asarray(flops, dtype=np.float64), np.asarray(params, dtype=np.float64),
                   np.asarray(loss, dtype=np.float64), np.searchsorted(levels, budget))

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0

    def group_flops(self) -> np.ndarray:
        """C of each budget: the geometric mean of its runs' C (as approach 2 takes it)."""
        return np.exp(np.array([np.log(self.flops[self.group == g]).mean() for g in range(self.n_groups)]))


class Minima(NamedTuple):
    """Per replicate (rows) and budget (columns): the parabola vertex, NaN where it failed."""

    log_n: np.ndarray
    loss: np.ndarray
    inside: np.ndarray
    """Full fit only (G,): the vertex lies within the budget's sampled sizes."""


def replicate_losses(p: SweepPoints, n_resamples: int, seed: int, how: str, min_sizes: int = 3):
    """(W, Y): run weights and losses (R + 1, n_runs), row 0 the data as measured."""
    n = len(p.loss)
    ones = np.ones((1, n))
    if how == "runs":
        counts = draw_run_counts(n, n_resamples, seed, strata=p.group).astype(np.float64)
        return np.vstack([ones, counts]), np.broadcast_to(p.loss, (n_resamples + 1, n))
    fitted, resid = parabola_residuals(p, min_sizes)
    rng = np.random.default_rng(seed)
    pool = resid[np.isfinite(resid)]
    pool = pool - pool.mean() if len(pool) else np.zeros(1)
    drawn = pool[rng.integers(0, len(pool), size=(n_resamples, n))]
    return np.broadcast_to(1.0, (n_resamples + 1, n)), np.vstack([p.loss[None], fitted + drawn])


def parabola_residuals(p: SweepPoints, min_sizes: int) -> tuple[np.ndarray, np.ndarray]:
    """Fitted values and modified residuals r / sqrt(1 - h) of each budget's parabola (NaN residual
    where a budget has too few sizes or no spare degree of freedom)."""
    fitted, resid = p.loss.copy(), np.full(len(p.loss), np.nan)
    for g in range(p.n_groups):
        m = p.group == g
        if len(np.unique(p.params[m])) < min_sizes or m.sum() <= 3:
            continue
        x = design(np.log(p.params[m]))
        hat = x @ np.linalg.pinv(x)
        fitted[m] = hat @ p.loss[m]
        resid[m] = (p.loss[m] - fitted[m]) / np.sqrt(np.clip(1 - np.diag(hat), 1e-9, None))
    return fitted, resid


def design(log_n: np.ndarray) -> np.ndarray:
    u = log_n - 0.5 * (log_n.min() + log_n.max())
    return np.column_stack([np.ones_like(u), u, u * u])


def budget_minima(p: SweepPoints, w: np.ndarray, y: np.ndarray, min_sizes: int = 3) -> Minima:
    """Every replicate's parabola vertex at every budget: weighted least squares L = c0 + c1 u + c2 u^2
    in u = log N - mid, by its 3x3 normal equations built from moments (matrix products, no loop over
    replicates)."""
    reps, groups = len(w), p.n_groups
    log_n, loss = np.full((reps, groups), np.nan), np.full((reps, groups), np.nan)
    inside = np.zeros(groups, dtype=bool)
    for g in range(groups):
        m = p.group == g
        ln = np.log(p.params[m])
        mid = 0.5 * (ln.min() + ln.max())
        u = ln - mid
        wg = w[:, m]
        mom = wg @ np.vander(u, 5, increasing=True)  # (R, 5): sums of w u^0..u^4
        gram = mom[:, [[0, 1, 2], [1, 2, 3], [2, 3, 4]]]
        rhs = (wg * y[:, m]) @ np.vander(u, 3, increasing=True)
        ok = distinct_sizes(ln, wg) >= min_sizes
        ok[ok] &= np.abs(np.linalg.det(gram[ok])) > 1e-12
        coef = np.full((reps, 3), np.nan)
        coef[ok] = np.linalg.solve(gram[ok], rhs[ok][..., None])[..., 0]
        c0, c1, c2 = coef.T
        good = ok & (np.nan_to_num(c2) > 0)
        log_n[good, g] = mid - c1[good] / (2 * c2[good])
        loss[good, g] = c0[good] - c1[good] ** 2 / (4 * c2[good])
        inside[g] = bool(good[0] and ln.min() <= log_n[0, g] <= ln.max())
    loss[~(loss > 0)] = np.nan
    return Minima(log_n, loss, inside)


def distinct_sizes(log_n: np.ndarray, w: np.ndarray) -> np.ndarray:
    """How many distinct sizes N each replicate gives weight to."""
    sizes = np.unique(log_n)
    if np.all(w > 0):
        return np.full(len(w), len(sizes))
    member = (log_n[:, None] == sizes[None, :]).astype(np.float64)  # (n, S)
    return ((w > 0) @ member > 0).sum(axis=1)


class Frontier(NamedTuple):
    """log L = l + c (u - centre) + q (u - centre)^2 with u = log C, one row per replicate."""

    l: np.ndarray
    c: np.ndarray
    q: np.ndarray
    centre: float

    def __call__(self, log_c) -> np.ndarray:
        u = np.asarray(log_c) - self.centre
        return self.l[..., None] + self.c[..., None] * u + self.q[..., None] * u * u

    def inverse(self, log_l: np.ndarray) -> np.ndarray:
        """u = log C where the frontier reaches log L, on its falling branch (NaN: never reached)."""
        l, c, q = self.l[:, None], self.c[:, None], self.q[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            disc = c * c - 4 * q * (l - log_l)
            u = 2 * (l - log_l) / (-c + np.sqrt(disc))  # the root continuous with the power law's (q -> 0)
            u[~((disc >= 0) & (c + 2 * q * u < 0))] = np.nan
        return u + self.centre


def fit_frontier(log_c: np.ndarray, log_l: np.ndarray, curved: bool) -> Frontier:
    """Least squares of log L_opt on log C per replicate (NaN budgets left out of their row)."""
    centre = float(np.mean(log_c))
    u = log_c - centre
    x = np.column_stack([np.ones_like(u), u] + ([u * u] if curved else []))
    ok = np.isfinite(log_l)
    w = ok.astype(np.float64)
    gram = np.einsum("rn,ni,nj->rij", w, x, x)
    rhs = np.einsum("rn,ni,rn->ri", w, x, np.where(ok, log_l, 0.0))
    enough = ok.sum(axis=1) >= x.shape[1] + (1 if curved else 0)
    coef = np.full((len(log_l), x.shape[1]), np.nan)
    coef[enough] = np.linalg.solve(gram[enough], rhs[enough][..., None])[..., 0]
    q = coef[:, 2] if curved else np.zeros(len(log_l))
    return Frontier(coef[:, 0], coef[:, 1], q, centre)


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(intercept, slope, centre) of y on x per replicate row, NaN columns left out."""
    centre = float(np.mean(x))
    u = x - centre
    ok = np.isfinite(y)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        su, sy = (ok * u).sum(1), np.where(ok, y, 0).sum(1)
        suu, suy = (ok * u * u).sum(1), np.where(ok, y * u, 0).sum(1)
        slope = (n * suy - su * sy) / (n * suu - su * su)
        intercept = (sy - slope * su) / n
    bad = n < 2
    slope[bad], intercept[bad] = np.nan, np.nan
    return intercept, slope, centre


@dataclass(frozen=True)
class Estimate:
    """A value from the data as measured and its bootstrap interval."""

    value: float
    ci: Optional[tuple]

    @classmethod
    def of(cls, samples: np.ndarray, level: float, dof: float = np.inf) -> "Estimate":
        """Row 0 is the estimate, the rest replicates (`expanded_interval`)."""
        lo, hi = expanded_interval(samples[1:], float(samples[0]), level, dof)
        return cls(float(samples[0]), None if not np.isfinite([lo, hi]).all() else (lo, hi))


def expanded_interval(samples: np.ndarray, estimate: float, level: float, dof: float = np.inf) -> tuple[float, float]:
    """The bias-corrected percentile interval (Efron & Tibshirani 1993, Sec. 14.3, with a = 0), its
    percentiles shifted by z0 = Phi^-1(share of replicates below the estimate) and expanded for the
    residual degrees of freedom `dof`: t_dof quantiles instead of normal ones (Hesterberg 2015, "What
    teachers should know about the bootstrap", Sec. 5.1: the expanded percentile interval).

    Why: a vertex and the inverse of a frontier are non-linear in the losses (replicates are not
    centred on the estimate), and a sweep's noise is known from few spare degrees of freedom (7 sizes
    x 5 budgets leave 20); the plain percentile interval covered k in 84-87% of synthetic draws at a
    nominal 90% (tests/test_compare_math.py)."""
    ok = samples[np.isfinite(samples)]
    if dof <= 0:  # no spare degree of freedom: the noise is unknown, and so is the interval
        return float("nan"), float("nan")
    if not len(ok) or not np.isfinite(estimate):
        return percentile_interval(samples, level)
    share = (np.sum(ok < estimate) + 0.5 * np.sum(ok == estimate)) / len(ok)
    z0 = ndtri(np.clip(share, 0.5 / len(ok), 1 - 0.5 / len(ok)))
    t = stdtrit(dof, (1 + level) / 2) if np.isfinite(dof) else ndtri((1 + level) / 2)
    lo, hi = np.percentile(ok, 100 * ndtr(2 * z0 + np.array([-t, t])))
    return float(lo), float(hi)


@dataclass(frozen=True)
class BudgetRow:
    flops: float
    in_a: bool
    in_b: bool
    b_measured: bool
    """k here puts B's measured IsoFLOP minimum through A's frontier (else: k is the trend's at this C)."""
    in_trend: bool
    """This budget's k entered the trend (B's loss lies within A's measured minima)."""
    k: Estimate
    n_opt_ratio: Optional[Estimate]
    """N_opt of B over N_opt of A at this C, where both sweeps measured a vertex here."""
    loss_a: Optional[float]
    loss_b: Optional[float]


@dataclass(frozen=True)
class Comparison:
    """The math's answer; `llm_ray.core.comparison.CompareRecord` is its file form."""

    budgets: tuple
    slope: Estimate
    """d log10 k / d log10 C: 10^slope is the factor by which k changes per decade."""
    centre: tuple
    """(C, Estimate of k) on the trend at the geometric centre of B's budgets: every budget's
    measurement pooled, the steadiest single number."""
    targets: tuple
    """(C, Estimate of k) for each target budget, carried along the trend."""
    band: tuple
    """(C, Estimate of k) on the trend at 25 budgets from the smallest measured to the largest target."""
    n_opt_law_ratio: tuple
    """(C, Estimate of N_opt,B / N_opt,A) on the two sweeps' N_opt power laws, at each target."""
    frontier_a: str
    """`curved` (log L quadratic in log C, 4+ budgets) or `power law`."""
    failed_fraction: float
    residual_dof: float
    notes: tuple = field(default_factory=tuple)


def compare_sweeps(a: SweepPoints, b: SweepPoints, s: CompareConfig) -> Comparison:
    """The multiplier at every budget of both sweeps, its trend and its value at the targets."""
    (ca, ma, fa, notes_a), (cb, mb, _, notes_b) = (sweep_side(p, s, seed) for p, seed in ((a, s.seed), (b, s.seed + 1)))
    dof = min(residual_dof(a, s.min_sizes), residual_dof(b, s.min_sizes))

    def est(samples: np.ndarray) -> Estimate:
        return Estimate.of(samples, s.ci_level, dof)

    log_k_b, in_trend = measured_log_k(ma, fa, cb, mb)
    extrapolated = in_trend.sum() < 2
    if extrapolated:  # B beyond A's losses at most budgets: the trend leans on A's frontier extrapolated
        in_trend = mb.inside.copy()
    intercept, slope, centre = fit_line(np.log10(cb), np.where(in_trend, log_k_b, np.nan) / np.log(10))

    def trend(c: float) -> np.ndarray:
        return 10 ** (intercept + slope * (np.log10(c) - centre))

    rows = budget_rows(ca, ma, cb, mb, np.exp(log_k_b), in_trend, trend, s.same_budget_dex, est)
    failed = float(np.mean(~np.isfinite(slope[1:]))) if s.n_resamples else 0.0
    notes = notes_a + notes_b + ((f"{100 * failed:.0f}% of bootstrap replicates gave no multiplier trend",)
                                 if failed > 0.05 else ())
    if extrapolated:
        notes += ("fewer than 2 of B's budgets reach a loss within A's measured minima: the trend uses all of B's "
                  "budgets, through A's frontier extrapolated beyond its data (add larger budgets to A)",)
    if dof <= 0:
        notes += ("no interval: every budget of a sweep has exactly 3 runs, so its parabolas leave no residual to "
                  "tell its noise by; train a 4th size per budget",)
    return Comparison(budgets=tuple(rows), slope=est(slope), centre=(float(10 ** centre), est(10 ** intercept)),
                      targets=tuple((float(t), est(trend(t))) for t in s.target_flops),
                      band=tuple((float(c), est(trend(c))) for c in band_grid(ca, cb, s.target_flops)),
                      n_opt_law_ratio=n_opt_law_ratio(ca, ma, cb, mb, s.target_flops, est),
                      frontier_a="curved" if fa.q[0] != 0 else "power law", failed_fraction=failed,
                      residual_dof=dof, notes=notes)


def measured_log_k(ma: Minima, fa: Frontier, cb: np.ndarray, mb: Minima) -> tuple[np.ndarray, np.ndarray]:
    """log k at each of B's budgets (R + 1, G_B): B's measured minimum through the inverse of A's
    frontier; and which of them enter the trend: those whose loss lies within A's measured minima
    (beyond them A's frontier is extrapolated, and a curved one bends where no data holds it)."""
    log_k = fa.inverse(np.log(mb.loss)) - np.log(cb)[None, :]
    lo, hi = np.nanmin(ma.loss[0]), np.nanmax(ma.loss[0])
    return log_k, mb.inside & (mb.loss[0] >= lo) & (mb.loss[0] <= hi)


def band_grid(ca: np.ndarray, cb: np.ndarray, targets) -> np.ndarray:
    everything = np.r_[ca, cb, np.asarray(list(targets), dtype=np.float64)]
    return np.geomspace(everything.min(), everything.max(), 25)


def residual_dof(p: SweepPoints, min_sizes: int) -> float:
    """Spare degrees of freedom of a sweep's parabolas (runs - 3 per fitted budget): how well its
    noise is known."""
    counts = [int((p.group == g).sum()) for g in range(p.n_groups)
              if len(np.unique(p.params[p.group == g])) >= min_sizes]
    return float(sum(n - 3 for n in counts))


def sweep_side(p: SweepPoints, s: CompareConfig, seed: int):
    """(budget C, minima, frontier fit, notes) of one sweep, every replicate."""
    w, y = replicate_losses(p, s.n_resamples, seed, s.resample, s.min_sizes)
    minima = budget_minima(p, w, y, s.min_sizes)
    c = p.group_flops()
    usable = minima.inside & np.isfinite(minima.loss[0])
    if usable.sum() < 2:
        raise ValueError(f"{usable.sum()} of {p.n_groups} budgets give an IsoFLOP minimum inside their sizes; a "
                         f"frontier needs 2: widen the ladder (sweep.sizes) around the optimum of each budget.")
    notes = tuple(f"C = {c[g]:.3g}: no minimum inside the sampled sizes, left out" for g in np.flatnonzero(~usable))
    minima = Minima(np.where(usable, minima.log_n, np.nan), np.where(usable, minima.loss, np.nan), usable)
    frontier = fit_frontier(np.log(c), np.log(minima.loss), curved=usable.sum() >= CURVED_MIN_BUDGETS)
    return c, minima, frontier, notes


def same_budget(c: np.ndarray, dex: float) -> np.ndarray:
    return np.round(np.log10(c) / dex).astype(int)


def budget_rows(ca, ma, cb, mb, k_b, in_trend, trend, dex: float, est) -> list:
    """A row per budget of either sweep: k measured where B measured a minimum, else on the trend."""
    rows = []
    for key in sorted(set(same_budget(np.r_[ca, cb], dex))):
        ia, ib = np.flatnonzero(same_budget(ca, dex) == key), np.flatnonzero(same_budget(cb, dex) == key)
        c = float(cb[ib[0]] if len(ib) else ca[ia[0]])
        measured_b = bool(len(ib) and mb.inside[ib[0]])
        a_ok = bool(len(ia) and ma.inside[ia[0]])
        rows.append(BudgetRow(
            flops=c, in_a=bool(len(ia)), in_b=bool(len(ib)), b_measured=measured_b,
            in_trend=bool(measured_b and in_trend[ib[0]]), k=est(k_b[:, ib[0]] if measured_b else trend(c)),
            n_opt_ratio=est(np.exp(mb.log_n[:, ib[0]] - ma.log_n[:, ia[0]])) if measured_b and a_ok else None,
            loss_a=float(ma.loss[0, ia[0]]) if a_ok else None,
            loss_b=float(mb.loss[0, ib[0]]) if measured_b else None))
    return rows


def n_opt_law_ratio(ca, ma, cb, mb, targets, est) -> tuple:
    """N_opt,B / N_opt,A at each target on the sweeps' N_opt = k_N C^a laws (approach 2's)."""
    la, sa, xa = fit_line(np.log10(ca), ma.log_n)
    lb, sb, xb = fit_line(np.log10(cb), mb.log_n)
    return tuple((float(t), est(np.exp((lb + sb * (np.log10(t) - xb)) - (la + sa * (np.log10(t) - xa)))))
                 for t in targets)


def trend_verdict(slope: Estimate) -> str:
    """`growing` or `fading` when the slope's interval excludes 0, else `constant` (within what the
    sweeps can tell); `unknown` without an interval."""
    if slope.ci is None:
        return "unknown"
    lo, hi = slope.ci
    return "growing" if lo > 0 else "fading" if hi < 0 else "constant"
