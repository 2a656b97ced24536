"""The primary forecast: one answer per budget ("train N on D, expect L within [lo, hi]"), chosen by a
rule fixed before any held-out run trains.

Three approaches (Hoffmann et al. 2022, Sec. 3) give three answers, and which one deserves the bet is
decided here from the sweep alone, never from the held-out runs:

rule `backtest` (leave the top budget out, rolling origin):
  1. each approach is refitted on the sweep's lower budgets and predicts the top budget's measured
     IsoFLOP minimum (its parabola vertex N*, L*; the lowest final loss where no vertex lies inside the
     sampled sizes), as Marin's Delphi and the GPT-4 report checked a law on a budget it never saw.
     With more budgets every budget k >= 3 is also such a fold (fit on the budgets below k, predict
     k's minimum), up to MAX_FOLDS folds from the top (a table of 60 budgets, e.g. Chinchilla's, would
     otherwise refit approach 3's 4,500-start grid 59 times; the folds nearest the top are the ones
     whose extrapolation resembles the forecast's); those lower folds size the interval (step 3), the top one chooses (on synthetic
     laws with 1-2% noise per cell, choosing by the RMS over all folds or over the top two was no
     better: a fold fitted on two budgets is a poorer judge of the fit on all of them);
  2. L comes from the approach with the smallest |loss error| on the top budget among approaches 2
     and 3 (LOSS_FROM; approach 1's only where neither was backtested: version 3 of the rule) and N_opt
     from the one, of all three, with the smallest |log N error|. Errors closer to the best than the run-to-run noise can tell
     apart (at least `tie_loss`) are tied; a tie goes to the first of TIE_ORDER (approach 2, 3, 1:
     the fewest known biases at sweep scale first, its docstring says why). Version 1 of this rule
     broke ties by agreement (the interval overlapping most others'), then width; on English
     documentation that overrode the best backtest score (approach 2: +0.34% loss, -10% N*) for the
     approach whose interval was widest in reach (approach 1), which missed the held-out run by +4.4%
     (docs/forecast.md). Agreement rewards a forecast for sitting between the others, not for being
     right, so it stays a diagnostic (`agrees_with`);
  3. the interval is the chosen approach's bootstrap interval widened in quadrature by its backtest
     errors, each scaled by the extrapolation distance (ln(C / C_top) / ln(C_k / C_below): a systematic
     error grows with how far in log C the law is carried) and combined as their RMS, and by the noise
     of one run (z * the seed-to-seed standard deviation, where replicates were trained).
rule `fallback` (no approach could be refitted without the top budget, e.g. only two budgets): approach
  3 for both (it predicts L at the N and D actually trained), else approach 2, else approach 1, with the
  bootstrap interval widened by the noise only.

Pure numpy and scipy: no Ray, torch, W&B or Hydra.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
from scipy.special import chdtri

from llm_ray.fitting.approaches import fit_envelope, fit_isoflop
from llm_ray.fitting.parametric import epoch_grid, fit_parametric
from llm_ray.fitting.predict import frontier_of, predict_budgets
from llm_ray.fitting.validation import forecast_loss

PRIMARY = "primary"
"""The name the primary forecast goes by beside approach1..3 (predictions.json, validation.json)."""
PREFERENCE = ("approach3", "approach2", "approach1")
"""Fallback order: approach 3 predicts L at the trained (N, D), the frontier laws only L_opt(C)."""
TIE_ORDER = ("approach2", "approach3", "approach1")
"""Who wins a backtest tie, fixed by each approach's known bias at sweep scale, not by any held-out run:
approach 2 reads only finished runs' final losses near each budget's minimum and assumes nothing beyond
local power laws; approach 3 reads every final loss but assumes the additive form, whose floor E one
decade of C cannot separate from the N and D terms (Besiroglu et al. 2024, "Chinchilla Scaling: A
replication attempt", Sec. 3: its fitted parameters move with the fitting choices; docs/experiments.md:
+2-8% at 4x on every corpus here); approach 1 reads checkpoints in the middle of cosine runs, where the
learning rate has not yet decayed, so its envelope lies above what runs of those lengths reach
(Hoffmann et al. 2022, App. B and Fig. A1: a cosine cycle longer than the run costs loss)."""
LOSS_FROM = ("approach2", "approach3")
"""The approaches whose loss the backtest may choose (version 3 of the rule); approach 1's loss only when
neither of these was backtested. Approach 1's envelope is made of checkpoints in the middle of cosine
runs, above what finished runs of those lengths reach (Hoffmann et al. 2022, App. B, Fig. A1), and
that bias grows as the law is carried out: a one-fold backtest over a factor of 2 in C cannot see it.
Under version 2, every time the backtest chose approach 1's loss outright on a sweep it had not seen,
the held-out run came out 4.8-7.2% below it, outside its interval (docs/forecast.md, "Version 3")."""
MAX_FOLDS = 3
"""Backtest folds at most: the top budget and the two below it as targets."""
TIE_LOSS = 0.0025
"""Backtest loss errors within 0.25% (or the noise, if larger) of the best are tied."""
TIE_LOG_N = math.log(1.1)
"""Backtest N errors within 10% of the best are tied."""


class Minimum(NamedTuple):
    """The top budget's measured minimum, the target of the backtest."""

    flops: float
    n_opt: float
    loss: float
    source: str
    """"parabola vertex" or "lowest cell"."""


class BacktestError(NamedTuple):
    """One approach fitted on the lower budgets, against the top budget's minimum."""

    approach: str
    n_pred: float
    loss_pred: float
    n_error: float
    """ln(N_pred / N*): +0.1 means 10% too large."""
    loss_error: float
    """(L_pred - L*) / L*."""


class Fold(NamedTuple):
    """One leave-out: every approach fitted on the budgets below `target`'s, against its minimum."""

    target: Minimum
    c_below: float
    """C of the highest budget left in the fit (the fold extrapolates from it to target.flops)."""
    errors: dict
    """approach -> BacktestError."""


class Backtest(NamedTuple):
    folds: tuple
    """Fold per predicted budget, lowest first; the last predicts the sweep's top budget."""
    skipped: dict
    """approach -> why it could not be backtested on the top budget."""

    @property
    def target(self) -> Optional[Minimum]:
        return self.folds[-1].target if self.folds else None

    @property
    def errors(self) -> dict:
        """approach -> BacktestError on the top budget (the approaches that take part in the rule)."""
        return self.folds[-1].errors if self.folds else {}

    def rms(self, approach: str, field: str) -> float:
        """Root mean square of one approach's `loss_error` or `n_error` over the folds it took part in."""
        v = [getattr(f.errors[approach], field) for f in self.folds if approach in f.errors]
        return math.sqrt(sum(x * x for x in v) / len(v)) if v else math.inf


class Candidate(NamedTuple):
    """One approach's forecast at the budget being forecast."""

    approach: str
    n_opt: float
    loss: float
    loss_ci: Optional[tuple] = None
    n_ci: Optional[tuple] = None


class Choice(NamedTuple):
    rule: str
    """`backtest` or `fallback`."""
    n_from: str
    loss_from: str
    why: str
    """The rule's reasoning in one sentence, for the report."""
    agrees_with: tuple
    """Other approaches whose loss interval overlaps the chosen one's."""


def budget_minimum(final: pd.DataFrame, groups: np.ndarray, label, isoflop_groups: Sequence = ()) -> Minimum:
    """One budget's measured minimum: approach 2's parabola vertex there if it lies inside the sampled
    sizes, else its lowest final loss. `isoflop_groups`: the full fit's IsoFlopGroup list."""
    for g in isoflop_groups:
        if str(g.label) == str(label) and g.fitted and g.inside:
            return Minimum(float(g.flops), float(g.n_opt), float(g.loss_opt), "parabola vertex")
    rows = final[np.asarray(groups) == label]
    best = rows.loc[rows["loss"].idxmin()]
    c = float(np.exp(np.log(rows["flops"]).mean()))
    return Minimum(c, float(best["params"]), float(best["loss"]), "lowest cell")


def top_minimum(final: pd.DataFrame, groups: np.ndarray, isoflop_groups: Sequence = ()) -> Optional[Minimum]:
    """The top budget's measured minimum (`budget_minimum`); None without rows."""
    labels = _labels_by_flops(final, groups)
    return budget_minimum(final, groups, labels[-1], isoflop_groups) if labels else None


def _labels_by_flops(final: pd.DataFrame, groups: np.ndarray) -> list:
    log_c = pd.Series(np.log(final["flops"].to_numpy()), index=np.asarray(groups))
    return list(log_c.groupby(level=0).mean().sort_values().index)


def backtest(points: pd.DataFrame, final: pd.DataFrame, groups: np.ndarray, cfg,
             isoflop_groups: Sequence = ()) -> Backtest:
    """Refit each approach on the budgets below each budget k >= 3 (the top MAX_FOLDS of them) and
    predict k's minimum (module
    docstring). `points`: every evaluation (approach 1), `final`: each run's final point with its group
    in `groups`, `cfg`: the FitConfig of the full fit, `isoflop_groups`: the full fit's parabolas."""
    labels = _labels_by_flops(final, groups)
    if len(labels) < 3:
        why = f"{len(labels)} budget(s): without the top one fewer than 2 are left to fit a law on"
        return Backtest((), {a: why for a in PREFERENCE})
    folds, skipped = [], {}
    for k in range(max(2, len(labels) - MAX_FOLDS), len(labels)):
        target = budget_minimum(final, groups, labels[k], isoflop_groups)
        fold, skipped = _fold(points, final, np.asarray(groups), labels[:k], target, cfg)
        folds.append(fold)
    return Backtest(tuple(folds), skipped)


def _fold(points: pd.DataFrame, final: pd.DataFrame, groups: np.ndarray, fit_labels: list, target: Minimum,
          cfg) -> tuple[Fold, dict]:
    low = np.isin(groups, fit_labels)
    below = final[low]
    c_below = float(np.exp(np.log(below.loc[groups[low] == fit_labels[-1], "flops"]).mean()))
    errors, skipped = {}, {}
    for name in PREFERENCE:
        try:
            params = _refit(name, points[points["run_id"].isin(below["run_id"])], below, groups[low], cfg)
        except ValueError as err:
            skipped[name] = str(err)
            continue
        n, _, l = (float(np.ravel(v)[0]) for v in frontier_of(name, params, [target.flops], cfg.flops_per_param_token))
        if not (math.isfinite(n) and math.isfinite(l) and n > 0):
            skipped[name] = f"the law refitted below C = {target.flops:.3g} gives no finite frontier there"
            continue
        errors[name] = BacktestError(name, n, l, math.log(n / target.n_opt), (l - target.loss) / target.loss)
    return Fold(target, c_below, errors), skipped


def _refit(name: str, points: pd.DataFrame, final: pd.DataFrame, groups: np.ndarray, cfg) -> np.ndarray:
    """One approach's parameter vector from a subset of the sweep, with the full fit's settings."""
    if name == "approach1":
        return fit_envelope(points["flops"], points["params"], points["tokens"], points["loss"],
                            bin_dex=cfg.envelope_bin_dex, min_sizes=cfg.envelope_min_sizes).laws.vector()
    if name == "approach2":
        return fit_isoflop(final["flops"], final["params"], final["tokens"], final["loss"], groups,
                           min_sizes=cfg.isoflop_min_sizes,
                           exclude_edge_minima=cfg.isoflop_exclude_edge_minima).laws.vector()
    grid = epoch_grid(cfg.alpha_grid, cfg.beta_grid, cfg.e_grid, cfg.a_grid, cfg.b_grid)
    p = fit_parametric(final["params"], final["tokens"], final["loss"], delta=cfg.huber_delta, grid=grid,
                       prune_iters=cfg.prune_iters, keep_starts=cfg.keep_starts, gtol=cfg.converged_gtol,
                       flops_per_param_token=cfg.flops_per_param_token)
    return np.array([p.E, p.A, p.B, p.alpha, p.beta])


def choose(candidates: Mapping[str, Candidate], bt: Backtest, *, noise_sd: Optional[float] = None,
           tie_loss: float = TIE_LOSS, tie_log_n: float = TIE_LOG_N) -> Choice:
    """Which approach gives the primary forecast's L and which its N_opt (module docstring)."""
    if not candidates:
        raise ValueError("no approach could be fitted: there is no forecast to choose from.")
    usable = {a: e for a, e in bt.errors.items() if a in candidates}
    if not usable:
        pick = next(a for a in PREFERENCE if a in candidates)
        why = (f"no approach could be refitted without the top budget ({_reasons(bt.skipped)}), so the fixed "
               f"preference approach 3, 2, 1 picks approach {pick[-1]}")
        return Choice("fallback", pick, pick, why, _agreeing(candidates, pick))
    if noise_sd and bt.target is not None:
        tie_loss = max(tie_loss, noise_sd / bt.target.loss)
    loss_pool = {a: e for a, e in usable.items() if a in LOSS_FROM} or usable
    loss_from, loss_tied = _best(loss_pool, lambda a: abs(usable[a].loss_error), tie_loss)
    n_from, n_tied = _best(usable, lambda a: abs(usable[a].n_error), tie_log_n)
    le, ne = usable[loss_from], usable[n_from]
    why = (f"fitted without the top budget (C = {bt.target.flops:.3g}), approach {loss_from[-1]} predicted its "
           f"minimum loss {_how(loss_tied)} ({100 * le.loss_error:+.2f}%; " + _others(usable, loss_from, "loss")
           + ")" + _left_out(usable, loss_pool) + f" and approach {n_from[-1]} its N* {_how(n_tied)} "
           f"({100 * math.expm1(ne.n_error):+.0f}%; " + _others(usable, n_from, "n") + ")" + _folds_note(bt))
    return Choice("backtest", n_from, loss_from, why, _agreeing(candidates, loss_from))


def _best(usable: Mapping[str, BacktestError], err, tie: float) -> tuple[str, bool]:
    """The approach with the smallest backtest score `err(approach)`, ties (within `tie`) going to the first
    of TIE_ORDER; and whether there was a tie."""
    best = min(err(a) for a in usable)
    tied = [a for a in TIE_ORDER if a in usable and err(a) <= best + tie]
    return tied[0], len(tied) > 1


def _left_out(usable: Mapping[str, BacktestError], pool: Mapping[str, BacktestError]) -> str:
    """Says so where approach 1 backtested best on the loss but was not a candidate (LOSS_FROM)."""
    best = min(usable, key=lambda a: abs(usable[a].loss_error))
    if best in pool:
        return ""
    return (f" (approach {best[-1]} backtested better, but its loss is not a candidate while approach 2 or 3 "
            "is: its envelope reads mid-cosine checkpoints)")


def _how(tied: bool) -> str:
    return "as well as another within the tie margin (ties go to approach 2, then 3, then 1)" if tied else "best"


def _agreeing(candidates: Mapping[str, Candidate], name: str, ci_field: str = "loss_ci") -> tuple:
    mine = getattr(candidates[name], ci_field)
    if mine is None:
        return ()
    return tuple(a for a, c in candidates.items() if a != name and getattr(c, ci_field) is not None
                 and max(mine[0], getattr(c, ci_field)[0]) <= min(mine[1], getattr(c, ci_field)[1]))


def _others(usable: Mapping[str, BacktestError], chosen: str, what: str) -> str:
    rest = [(a, e) for a, e in usable.items() if a != chosen]
    if not rest:
        return "the only approach backtested"
    fmt = ((lambda e: f"{100 * e.loss_error:+.2f}%") if what == "loss" else
           (lambda e: f"{100 * math.expm1(e.n_error):+.0f}%"))
    return ", ".join(f"approach {a[-1]} {fmt(e)}" for a, e in rest)


def _folds_note(bt: Backtest) -> str:
    if len(bt.folds) < 2:
        return ""
    return (f"; the interval carries the errors of {len(bt.folds)} folds (each budget from C = "
            f"{bt.folds[0].target.flops:.3g} predicted from those below it)")


def _reasons(skipped: Mapping[str, str]) -> str:
    return "; ".join(f"{a[-1]}: {r}" for a, r in skipped.items()) or "no budgets below the top"


def extrapolation_scale(c: float, c_top: float, c_below: float, c_fold: Optional[float] = None) -> float:
    """How much farther the forecast carries the law beyond the top budget (ln C / C_top) than a fold
    carried it beyond its fit (ln C_fold / C_below; C_fold defaults to C_top), at least 1."""
    c_fold = c_top if c_fold is None else c_fold
    if not (c_fold > c_below > 0 and c > 0 and c_top > 0):
        return 1.0
    return max(1.0, math.log(c / c_top) / math.log(c_fold / c_below))


def widen(loss: float, ci: Optional[Sequence[float]], *, rel_error: float = 0.0, noise_sd: Optional[float] = None,
          level: float = 0.9) -> tuple:
    """The primary interval: each side of the bootstrap interval (0 without one) combined in quadrature
    with |rel_error| * loss (the scaled backtest error) and z * noise_sd (the noise of the one run that
    will be measured)."""
    z = z_value(level)
    ci = _finite(ci)
    lo_side, hi_side = (0.0, 0.0) if ci is None else (max(0.0, loss - ci[0]), max(0.0, ci[1] - loss))
    # hypot, not sqrt of squares: a bootstrap of a law fitted to a few tiny cells can put one side
    # at 1e213 (finite, and a fair answer: unbounded), whose square overflows.
    extra = math.hypot(rel_error * loss, z * (noise_sd or 0.0))
    return (loss - math.hypot(lo_side, extra), loss + math.hypot(hi_side, extra))


def z_value(level: float) -> float:
    """The two-sided normal quantile of a `level` interval (1.645 at 90%)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def noise_allows(sd: float, loss: float, level: float) -> float:
    """The relative error the seed noise of the one run measured alone allows at `level`: z * sd / L."""
    return z_value(level) * sd / loss


class SeedNoise(NamedTuple):
    sd: Optional[float]
    """The run-to-run standard deviation of the final loss; None when no cell was replicated."""
    dof: int
    """Its degrees of freedom: runs of replicated cells minus one per cell."""


def seed_noise(final: pd.DataFrame, groups: Optional[np.ndarray] = None) -> SeedNoise:
    """The run-to-run spread of the final loss, pooled over cells trained more than once (the same
    IsoFLOP group, `groups`, or else budget column, and the same N; different seeds)."""
    if len(final) == 0:
        return SeedNoise(None, 0)
    if groups is None:
        groups = final["budget"].to_numpy() if "budget" in final.columns else np.zeros(len(final))
    grouped = final["loss"].groupby([np.asarray(groups), final["params"].to_numpy()])
    dof = int((grouped.count() - 1).sum())
    ss = float(grouped.apply(lambda s: float(((s - s.mean()) ** 2).sum())).sum())
    return SeedNoise(float(math.sqrt(ss / dof)) if dof else None, dof)


def sd_interval(sd: float, dof: int, level: float) -> tuple:
    """The `level` confidence interval of a standard deviation measured with `dof` degrees of freedom
    (dof * s^2 / sigma^2 is chi-square with dof degrees of freedom, for normal noise): with 3, the
    90% interval runs from 0.62 to 2.9 times the measured sd, so a few replicates only size the noise
    roughly."""
    tail = (1.0 - level) / 2.0
    return (sd * math.sqrt(dof / float(chdtri(dof, tail))), sd * math.sqrt(dof / float(chdtri(dof, 1.0 - tail))))


def scaled_error(bt: Backtest, choice: Choice, c: float) -> float:
    """The chosen loss approach's backtest errors carried to C: each fold's |error| times how much
    farther C lies beyond the top budget than the fold's target beyond its fit (at least 1), combined
    as their root mean square; 0 under the fallback rule."""
    if choice.rule != "backtest" or bt.target is None:
        return 0.0
    scaled = [abs(f.errors[choice.loss_from].loss_error) * extrapolation_scale(c, bt.target.flops, f.c_below,
                                                                                 f.target.flops)
              for f in bt.folds if choice.loss_from in f.errors]
    return math.sqrt(sum(x * x for x in scaled) / len(scaled)) if scaled else 0.0


class Primary(NamedTuple):
    """The one forecast for budget C: train N on D, expect L within ci."""

    flops: float
    n_opt: float
    d_opt: float
    loss: float
    ci: tuple
    rule: str
    n_from: str
    loss_from: str
    why: str
    agrees_with: tuple
    margin: float
    """The scaled backtest error folded into ci (relative)."""
    noise_sd: Optional[float]
    """The run-to-run standard deviation folded into ci (None: no replicates were trained)."""
    noise_dof: int = 0
    """Degrees of freedom behind noise_sd (replicated runs minus one per replicated cell)."""

    def as_dict(self) -> dict:
        return {**self._asdict(), "ci": list(self.ci), "agrees_with": list(self.agrees_with)}


def primary_at(c: float, choice: Choice, bt: Backtest, params: Mapping[str, np.ndarray],
               samples: Mapping[str, Optional[np.ndarray]], *, noise: Optional[float], level: float,
               k: float, noise_dof: int = 0) -> Primary:
    """The primary forecast at C: N_opt from `choice.n_from`, D = C / (k N), and L from
    `choice.loss_from` (approach 3: L(N, D) at that N and D; approaches 1, 2: L_opt(C)), its interval
    widened by `widen`."""
    n = float(np.ravel(frontier_of(choice.n_from, params[choice.n_from], [c], k)[0])[0])
    d = c / (k * n)
    f = forecast_loss(choice.loss_from, params[choice.loss_from], samples.get(choice.loss_from), n=n, d=d, c=c,
                      level=level, k=k)
    margin = scaled_error(bt, choice, c)
    ci = widen(f.loss, f.ci, rel_error=margin, noise_sd=noise, level=level)
    return Primary(float(c), n, d, f.loss, ci, choice.rule, choice.n_from, choice.loss_from, choice.why,
                   choice.agrees_with, margin, noise, noise_dof)


def candidates_at(c: float, params: Mapping[str, np.ndarray], samples: Mapping[str, Optional[np.ndarray]], *,
                  level: float, k: float) -> dict:
    """Each fitted approach's forecast at C, for `choose`."""
    out = {}
    for name, p in params.items():
        f = predict_budgets(name, p, samples.get(name), [c], level=level, k=k)[0]
        ci = f.ci or {}
        out[name] = Candidate(name, f.n_opt, f.loss, _finite(ci.get("loss")), _finite(ci.get("n_opt")))
    return out


def _finite(ci: Optional[Sequence[float]]) -> Optional[tuple]:
    """An interval, or None where there is none (no resamples, or every resample failed: NaN bounds)."""
    return tuple(ci) if ci is not None and all(v is not None and math.isfinite(v) for v in ci) else None
