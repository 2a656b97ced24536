"""Degradation laws: how much loss a compression costs, as a function of model size N and data D.

Three forms, each linear in log space once its one non-linear parameter (if any) is fixed, so a fit is
a weighted least-squares solve and the bootstrap refits hundreds of them in milliseconds:

- `power`    delta(N, D) = C * D^gamma_D / N^gamma_N
             Kumar et al. 2024 ("Scaling Laws for Precision", arXiv 2411.04330, Sec. 3) for post-training
             quantization at one precision: PTQ hurts more the more tokens a model saw (gamma_D > 0)
             and less the larger it is. Fitted per compression setting.
- `ptq`      delta(N, D, P) = C_T * exp(-P / gamma_post) * D^gamma_D / N^gamma_N
             the same paper's form across post-training bit widths P of one quantization method.
- `sparsity` delta(N, D, S) = C_S * ((1 - S)^(-b_S) - 1) * D^gamma_D / N^gamma_N
             in the spirit of Frantar et al. 2023 ("Scaling Laws for Sparsely-Connected Foundation
             Models", arXiv 2309.08520), whose sparse-training law scales the N-term of the loss by a
             factor a_S (1 - S)^b_S + c_S that is 1 when dense: here the loss added by post-training
             magnitude pruning is that factor's growth over 1, a power of 1/(1 - S) that vanishes at
             S = 0, times the same size and data terms as PTQ. b_S is profiled (a bounded 1-D search).

Only points with delta > min_delta are fitted (a positive power law cannot describe a change that is
zero or negative; the count left out is reported). Intervals: bootstrap over cells (a cell's points
drawn together; stratified by training budget when given), percentile intervals, as the main fitter
(`llm_ray.fitting.bootstrap`).

Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from scipy.optimize import minimize_scalar

from llm_ray.fitting.bootstrap import draw_run_counts, percentile_interval

FORMS = {"power": ("C", "gamma_D", "gamma_N"), "ptq": ("C", "gamma_post", "gamma_D", "gamma_N"),
         "sparsity": ("C", "b_S", "gamma_D", "gamma_N")}
FORMULAS = {"power": "delta = C * D^gamma_D / N^gamma_N",
            "ptq": "delta = C * exp(-P / gamma_post) * D^gamma_D / N^gamma_N",
            "sparsity": "delta = C * ((1 - S)^(-b_S) - 1) * D^gamma_D / N^gamma_N"}
B_S_BOUNDS = (1e-3, 20.0)


@dataclass(frozen=True)
class DegradationFit:
    """A fitted degradation law, or why it could not be fitted."""

    name: str
    """What was fitted: a setting id (`rtn_group-b4-g8`) or a method across its settings."""
    form: str
    status: str
    """`ok` or `skipped` (then `reason` says why)."""
    reason: str = ""
    params: Mapping[str, float] = field(default_factory=dict)
    ci: Mapping[str, tuple] = field(default_factory=dict)
    n_points: int = 0
    """Points fitted (delta > min_delta)."""
    n_excluded: int = 0
    """Points left out because delta <= min_delta."""
    rms_log: float = float("nan")
    """Root-mean-square residual of log delta (0.1: the law is off by ~10% on a typical point)."""
    level: float = 0.9

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def predict(self, params, tokens, bits=None, sparsity=None) -> np.ndarray:
        """delta at (N, D[, P or S]) under the fitted law."""
        p = self.params
        theta = np.array([np.log(p["C"]), p["gamma_D"], p["gamma_N"]])
        n, d = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
        log_delta = (_design(n.ravel(), d.ravel()) @ theta).reshape(n.shape)
        if self.form == "ptq":
            log_delta = log_delta - np.asarray(bits, float) / p["gamma_post"]
        elif self.form == "sparsity":
            log_delta = log_delta + _sparsity_term(np.asarray(sparsity, float), p["b_S"])
        return np.exp(log_delta)

    def to_json(self) -> dict:
        return {"name": self.name, "form": self.form, "formula": FORMULAS[self.form], "status": self.status,
                "reason": self.reason, "params": dict(self.params), "ci": {k: list(v) for k, v in self.ci.items()},
                "n_points": self.n_points, "n_excluded": self.n_excluded, "rms_log": self.rms_log,
                "level": self.level}


def _design(params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Columns (1, log D, -log N): log delta = log C + gamma_D log D - gamma_N log N."""
    return np.column_stack([np.ones_like(params), np.log(tokens), -np.log(params)])


def _sparsity_term(sparsity: np.ndarray, b_s: float) -> np.ndarray:
    """log((1 - S)^(-b_S) - 1), written with expm1 so small S and b_S keep their precision."""
    return np.log(np.expm1(-b_s * np.log1p(-sparsity)))


def _solve(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted least squares: (coefficients, weighted residual sum of squares); NaN when the weighted
    design cannot determine every coefficient (e.g. a resample with one model size)."""
    keep = w > 0
    xs, ys = x[keep] * np.sqrt(w[keep])[:, None], y[keep] * np.sqrt(w[keep])
    if len(ys) <= x.shape[1] or np.linalg.matrix_rank(xs) < x.shape[1]:
        return np.full(x.shape[1], np.nan), np.nan
    coef, *_ = np.linalg.lstsq(xs, ys, rcond=None)
    return coef, float(np.sum((xs @ coef - ys) ** 2))


def _fit_once(form: str, x: np.ndarray, y: np.ndarray, extra: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One weighted fit: the parameter vector in FORMS[form] order (NaN on failure)."""
    if form == "power":
        coef, _ = _solve(x, y, w)
        return np.array([np.exp(coef[0]), coef[1], coef[2]])
    if form == "ptq":
        coef, _ = _solve(np.column_stack([x, -extra]), y, w)
        return np.array([np.exp(coef[0]), 1.0 / coef[3], coef[1], coef[2]])

    return _fit_sparsity(x, y, extra, w)


def _fit_sparsity(x: np.ndarray, y: np.ndarray, sparsity: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Profile b_S: for each b_S the rest is linear, and its residual is the part of
    sqrt(w) (log delta - log((1 - S)^(-b_S) - 1)) outside the design's column space (one QR per fit)."""
    keep = w > 0
    sw = np.sqrt(w[keep])
    xs = x[keep] * sw[:, None]
    if len(xs) <= x.shape[1] + 1 or np.linalg.matrix_rank(xs) < x.shape[1]:
        return np.full(4, np.nan)
    q = np.linalg.qr(xs)[0]

    def rss(b_s):
        r = sw * (y[keep] - _sparsity_term(sparsity[keep], b_s))
        return float(r @ r - np.sum((q.T @ r) ** 2))

    b_s = minimize_scalar(rss, bounds=B_S_BOUNDS, method="bounded", options={"xatol": 1e-5}).x
    coef, _ = _solve(x, y - _sparsity_term(sparsity, b_s), w)
    return np.array([np.exp(coef[0]), b_s, coef[1], coef[2]])


def fit_degradation(params, tokens, delta, *, form: str = "power", bits=None, sparsity=None, units=None,
                    strata=None, min_delta: float = 1e-4, n_bootstrap: int = 200, ci_level: float = 0.9,
                    seed: int = 0, name: str = "") -> DegradationFit:
    """Fit one degradation law to points (N, D[, P or S], delta) with bootstrap intervals.

    `units`: the cell each point belongs to (a resample draws a cell's points together; default: each
    point its own unit); `strata`: per unit, a group to resample within (the training budget C)."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}: choose among {list(FORMS)}.")
    n_, d_, y_ = (np.asarray(v, float) for v in (params, tokens, delta))
    extra_ = np.asarray(bits if form == "ptq" else sparsity if form == "sparsity" else np.zeros_like(n_), float)
    units_ = np.arange(len(n_)) if units is None else np.unique(np.asarray(units), return_inverse=True)[1]
    fitted = np.isfinite(y_) & (y_ > min_delta)
    n_excluded = int(np.sum(~fitted))
    x, y, extra, u = _design(n_[fitted], d_[fitted]), np.log(y_[fitted]), extra_[fitted], units_[fitted]
    skip = _why_not(form, n_[fitted], d_[fitted], extra, n_excluded, min_delta)
    if skip:
        return DegradationFit(name=name, form=form, status="skipped", reason=skip, n_points=int(fitted.sum()),
                              n_excluded=n_excluded, level=ci_level)
    theta = _fit_once(form, x, y, extra, np.ones(len(y)))
    keys = FORMS[form]
    point = dict(zip(keys, map(float, theta)))
    fit = DegradationFit(name=name, form=form, status="ok", params=point, n_points=len(y), n_excluded=n_excluded,
                         level=ci_level)
    resid = np.log(fit.predict(n_[fitted], d_[fitted], bits=extra, sparsity=extra)) - y
    ci = {}
    if n_bootstrap:
        unit_strata = None if strata is None else _per_unit(np.asarray(strata), units_)
        counts = draw_run_counts(units_.max() + 1, n_bootstrap, seed, unit_strata)
        samples = np.array([_fit_once(form, x, y, extra, c[u].astype(float)) for c in counts])
        lo, hi = percentile_interval(samples, ci_level)
        ci = {k: (float(a), float(b)) for k, a, b in zip(keys, lo, hi)}
    return DegradationFit(name=name, form=form, status="ok", params=point, ci=ci, n_points=len(y),
                          n_excluded=n_excluded, rms_log=float(np.sqrt(np.mean(resid ** 2))), level=ci_level)


def _per_unit(strata: np.ndarray, units: np.ndarray) -> np.ndarray:
    """One stratum label per unit, from per-unit labels or per-point ones."""
    if len(strata) == units.max() + 1 and len(strata) != len(units):
        return strata
    out = np.empty(units.max() + 1, dtype=strata.dtype)
    out[units] = strata
    return out


def _why_not(form: str, n: np.ndarray, d: np.ndarray, extra: np.ndarray, n_excluded: int,
             min_delta: float) -> Optional[str]:
    """Why this form cannot be fitted to these points (None: it can)."""
    n_coef = len(FORMS[form])
    if len(n) <= n_coef:
        return (f"{len(n)} points with delta > {min_delta:g} nats ({n_excluded} at or below it): the law has "
                f"{n_coef} parameters and needs more points")
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2 or len(np.unique(np.log(d) - np.log(n))) < 2:
        return "needs at least two model sizes N and two token counts D that vary independently"
    if form != "power" and len(np.unique(extra)) < 2:
        return f"needs at least two {'bit widths' if form == 'ptq' else 'sparsities'}"
    return None
