"""Approach 3: the parametric law L(N, D) = E + A / N^alpha + B / D^beta, fitted as Chinchilla and Epoch did.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", Sec. 3.3 and App. D.2) and
Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") fit the law in log space with
theta = (a, b, e, alpha, beta), A = exp(a), B = exp(b), E = exp(e):

    pred_i = logsumexp(a - alpha * log N_i,  b - beta * log D_i,  e)       (= log L(N_i, D_i))
    objective(theta) = sum_i w_i * Huber_delta(pred_i - log L_i),   delta = 1e-3

minimised with L-BFGS from every point of a 4,500-start grid, the best final objective winning.
Chinchilla's own published fit turned out to be an unconverged one (Epoch), so the result records the
final gradient norm and whether it is small.

Speed: the objective and its analytic gradient are evaluated for all starts at once as (S, n) arrays,
every start gets `prune_iters` iterations of a batched L-BFGS, only the `keep_starts` best continue to
convergence, and the winner is polished by scipy's L-BFGS-B. On Chinchilla's 240 runs about a third of
the 4,500 starts end at the global optimum and they rank at the top after a few iterations, so the
pruning loses nothing there (the tests check the optimum is Epoch's). The objective is flat along
directions where A, B trade off against alpha, beta: expect A and B to move by percents between
correct optimisers while E, alpha, beta and a agree closely.

Derived frontier (Hoffmann et al. 2022 eq. 4), under C = k * N * D:
    a = beta / (alpha + beta),  b = alpha / (alpha + beta),  G = (alpha * A / (beta * B))^(1 / (alpha + beta))
    N_opt(C) = G * (C / k)^a,   D_opt(C) = (C / k)^b / G,   L_opt(C) = L(N_opt(C), D_opt(C)).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import minimize

from llm_ray.fitting.config import EPOCH_A_GRID, EPOCH_ALPHA_GRID, EPOCH_B_GRID, EPOCH_BETA_GRID, EPOCH_E_GRID
from llm_ray.fitting.optimize import batched_lbfgs

N_PARAMS = 5  # theta = (a, b, e, alpha, beta)


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                    weights: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Objective and analytic gradient for S parameter vectors at once.

    theta: (S, 5) rows (a, b, e, alpha, beta); log_n, log_d, log_l: (n,) shared by all rows or (S, n)
    one data set per row; weights: (n,) or (S, n).
    Returns f (S,) and grad (S, 5). With z1 = exp(a - alpha log N), z2 = exp(b - beta log D),
    z3 = exp(e), s = z1 + z2 + z3, r = log s - log L and psi = clip(r, -delta, delta) = Huber'(r):
        Huber(r) = psi * (r - psi / 2),
        d f / d(a, b, e) = sum w psi (z1, z2, z3) / s,   d f / d(alpha, beta) = -sum w psi (z1 log N, z2 log D) / s.
    The exponentials are taken unshifted (no max subtraction): for the parameter ranges that matter
    they stay far from overflow, and a point where they do not is returned as f = inf, which the
    line searches reject.
    """
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(N_PARAMS))
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        z1 = np.exp(a - alpha * log_n)
        z2 = np.exp(b - beta * log_d)
        z3 = np.exp(e)
        s = z1 + z2 + z3
        r = np.log(s) - log_l
        psi = np.clip(r, -delta, delta)
        huber = psi * (r - 0.5 * psi)
        if weights.ndim == 1:
            f = huber @ weights
            g0 = psi * weights / s
        else:
            f = np.einsum("ij,ij->i", huber, weights)
            g0 = psi * weights / s
        q1 = g0 * z1
        q2 = g0 * z2
        if log_n.ndim == 1:
            g_alpha, g_beta = q1 @ log_n, q2 @ log_d
        else:
            g_alpha, g_beta = np.einsum("ij,ij->i", q1, log_n), np.einsum("ij,ij->i", q2, log_d)
        grad = np.stack([q1.sum(1), q2.sum(1), g0.sum(1) * z3[:, 0], -g_alpha, -g_beta], axis=1)
    bad = ~(np.isfinite(f) & np.isfinite(grad).all(axis=1))
    f[bad] = np.inf
    grad[bad] = 0.0
    return f, grad


def epoch_grid(alpha: Sequence[float], beta: Sequence[float], e: Sequence[float], a: Sequence[float],
               b: Sequence[float]) -> np.ndarray:
    """All combinations of the starting values, as (S, 5) rows (a, b, e, alpha, beta)."""
    return np.array([(a_, b_, e_, al, be) for al, be, e_, a_, b_ in itertools.product(alpha, beta, e, a, b)],
                    dtype=np.float64)


@dataclass(frozen=True)
class ParametricFit:
    """A fitted L(N, D) = E + A / N^alpha + B / D^beta and how the optimiser got there."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    """Sum of Huber(log-residuals) at the optimum (Epoch's definition, unweighted when w = 1)."""
    grad_norm: float
    """max |d objective / d theta| at the optimum."""
    converged: bool
    """grad_norm / (delta * sum w) <= gtol: a stationary point, not an optimiser stopped early."""
    n_points: int
    n_starts: int
    """Starting points evaluated (the grid, or 1 for a warm start)."""
    n_kept: int
    """Starts run to convergence after pruning."""
    flops_per_param_token: float = 6.0

    @property
    def theta(self) -> np.ndarray:
        return np.array([np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta])

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def loss(self, n, d):
        """L(N, D) = E + A / N^alpha + B / D^beta."""
        return loss_nd(np.array([self.E, self.A, self.B, self.alpha, self.beta]), n, d)

    def frontier(self, c):
        """(N_opt, D_opt, L_opt) at compute C under C = k N D (Hoffmann et al. 2022 eq. 4)."""
        return frontier(np.array([self.E, self.A, self.B, self.alpha, self.beta]), c, self.flops_per_param_token)

    def as_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a": self.a, "b": self.b, "objective": self.objective, "grad_norm": self.grad_norm,
                "converged": self.converged, "n_points": self.n_points, "n_starts": self.n_starts,
                "n_kept": self.n_kept}


def loss_nd(p: np.ndarray, n, d):
    """L(N, D) for p = (E, A, B, alpha, beta) rows (..., 5), broadcasting over N and D."""
    p = np.asarray(p, dtype=np.float64)
    E, A, B, al, be = (p[..., i, None] for i in range(5)) if p.ndim > 1 else p
    n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return E + A / n**al + B / d**be


def frontier(p: np.ndarray, c, k: float):
    """N_opt, D_opt, L_opt at compute C for p = (E, A, B, alpha, beta) (rows (S, 5) give (S, len(C)))."""
    p = np.asarray(p, dtype=np.float64)
    E, A, B, al, be = (p[..., i, None] for i in range(5)) if p.ndim > 1 else p
    c = np.asarray(c, dtype=np.float64)
    g = (al * A / (be * B)) ** (1.0 / (al + be))
    n_opt = g * (c / k) ** (be / (al + be))
    d_opt = (c / k) ** (al / (al + be)) / g
    return n_opt, d_opt, E + A / n_opt**al + B / d_opt**be


def _check_inputs(n, d, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, d, loss = (np.asarray(v, dtype=np.float64).ravel() for v in (n, d, loss))
    if not (len(n) == len(d) == len(loss)):
        raise ValueError(f"approach 3: N, D and L must have equal lengths, got {len(n)}, {len(d)}, {len(loss)}.")
    if len(n) < N_PARAMS:
        raise ValueError(f"approach 3: {len(n)} points are fewer than the 5 parameters (E, A, B, alpha, "
                         "beta); measure more runs.")
    for name, v in (("params N", n), ("tokens D", d), ("loss L", loss)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"approach 3: {name} must be finite and > 0.")
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        raise ValueError("approach 3: N and D must each take at least 2 distinct values to identify alpha and beta.")
    return np.log(n), np.log(d), np.log(loss)


def fit_parametric(n, d, loss, *, weights: Optional[np.ndarray] = None, delta: float = 1e-3,
                   grid: Optional[np.ndarray] = None, prune_iters: int = 5, keep_starts: int = 50,
                   gtol: float = 1e-5, flops_per_param_token: float = 6.0) -> ParametricFit:
    """Fit L(N, D) from every start of ``grid`` (default: Epoch's 4,500) and return the best optimum.

    1. objective and gradient at all starts; ``prune_iters`` batched L-BFGS iterations for all;
    2. the ``keep_starts`` lowest objectives (0 = all) continue with batched L-BFGS to convergence;
    3. the best few distinct optima are polished by scipy L-BFGS-B with the analytic gradient, and the
       lowest objective wins.
    """
    log_n, log_d, log_l = _check_inputs(n, d, loss)
    w = np.ones_like(log_n) if weights is None else np.asarray(weights, dtype=np.float64)
    if grid is None:
        grid = epoch_grid(EPOCH_ALPHA_GRID, EPOCH_BETA_GRID, EPOCH_E_GRID, EPOCH_A_GRID, EPOCH_B_GRID)
    grid = np.atleast_2d(np.asarray(grid, dtype=np.float64))

    def fun(theta, rows):
        return huber_objective(theta, log_n, log_d, log_l, w, delta)

    scale = delta * w.sum()
    x = grid
    if prune_iters > 0 and 0 < keep_starts < len(grid):
        x = batched_lbfgs(fun, grid, max_iter=prune_iters, gtol=1e-9 * scale).x
    f0, _ = fun(x, None)
    keep = np.argsort(f0, kind="stable")[: keep_starts if keep_starts > 0 else len(x)]
    keep = keep[np.isfinite(f0[keep])]
    if keep.size == 0:
        raise ValueError("approach 3: the objective is not finite at any start; check the data's scale.")
    res = batched_lbfgs(fun, x[keep], max_iter=2000, gtol=1e-10 * scale)
    theta, f_best, g_best = _polish(fun, res.x, res.f, scale)
    return _result(theta, f_best, g_best, scale, gtol, len(log_n), len(grid), int(keep.size), flops_per_param_token)


def refit_batch(theta0: np.ndarray, n, d, loss, weights: np.ndarray, *, delta: float = 1e-3,
                max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Refit one problem per row of ``weights`` (R, n), all at once, from warm starts.

    Used by the bootstrap: resampling runs with replacement is the same as weighting each point by how
    often its run was drawn, so the replicates share the data and differ only in their weights.
    ``theta0`` is one start (5,) for all rows or one per row (R, 5); N, D, L are (n,) shared by all
    rows or (R, n), one data set per row (e.g. many synthetic draws refitted together).
    Returns p = (E, A, B, alpha, beta) rows (R, 5) and a converged flag per row.
    """
    log_n, log_d, log_l = (np.log(np.asarray(v, dtype=np.float64)) for v in (n, d, loss))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    per_row = log_n.ndim == 2

    def fun(theta, rows):
        if per_row:
            return huber_objective(theta, log_n[rows], log_d[rows], log_l[rows], weights[rows], delta)
        return huber_objective(theta, log_n, log_d, log_l, weights[rows], delta)

    start = np.array(np.broadcast_to(np.asarray(theta0, dtype=np.float64), (len(weights), N_PARAMS)))
    res = batched_lbfgs(fun, start, max_iter=max_iter, gtol=1e-10 * delta * weights.sum(1).min())
    return theta_to_params(res.x), res.converged & np.isfinite(res.f)


def theta_to_params(theta: np.ndarray) -> np.ndarray:
    """(a, b, e, alpha, beta) -> (E, A, B, alpha, beta), row-wise."""
    theta = np.atleast_2d(theta)
    return np.column_stack([np.exp(theta[:, 2]), np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 3], theta[:, 4]])


def objective_at(p: Sequence[float], n, d, loss, *, delta: float = 1e-3) -> float:
    """Objective at given (E, A, B, alpha, beta), e.g. to compare a fit with a published point."""
    E, A, B, al, be = p
    theta = np.array([[np.log(A), np.log(B), np.log(E), al, be]])
    log_n, log_d, log_l = _check_inputs(n, d, loss)
    return float(huber_objective(theta, log_n, log_d, log_l, np.ones_like(log_n), delta)[0][0])


def _polish(fun, xs, fs, scale, n_polish: int = 3):
    """scipy L-BFGS-B on the best few distinct optima; returns the lowest (theta, f, grad)."""
    order = np.argsort(fs, kind="stable")
    picked: list[np.ndarray] = []
    for i in order:
        if np.isfinite(fs[i]) and all(np.abs(xs[i] - p).max() > 1e-6 for p in picked):
            picked.append(xs[i])
        if len(picked) == n_polish:
            break

    def f1(t):
        f, g = fun(t[None], None)
        return f[0], g[0]

    best = None
    for start in picked:
        r = minimize(f1, start, jac=True, method="L-BFGS-B",
                     options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12 * scale, "maxcor": 20})
        f, g = f1(r.x)
        cand = (r.x, f, g)
        f_start, g_start = f1(start)
        if f_start < f:  # scipy never returns a worse point in practice; keep the guarantee anyway
            cand = (start, f_start, g_start)
        if best is None or cand[1] < best[1]:
            best = cand
    return best


def _result(theta, f, g, scale, gtol, n_points, n_starts, n_kept, k) -> ParametricFit:
    with np.errstate(over="ignore"):
        E, A, B, al, be = theta_to_params(theta)[0]
    if not np.isfinite([E, A, B, al, be]).all() or min(A, B, al, be) <= 0:
        # Seen on a ladder whose every budget is best at its smallest size: the optimum runs off to
        # A = inf, alpha ~ 1e3 (the N term a step), or to A = 0 with alpha < 0 (no N term at all):
        # finite in log space and meaningless as a law, whose exponents are positive.
        raise ValueError(
            f"approach 3: the best optimum is degenerate (E={E:.3g}, A={A:.3g}, B={B:.3g}, alpha={al:.3g}, "
            f"beta={be:.3g}): the runs do not identify L(N, D). Typically every budget is best at an edge "
            f"of the size ladder: extend the ladder past the IsoFLOP minima (sweep.sizes).")
    grad_norm = float(np.abs(g).max())
    return ParametricFit(E=float(E), A=float(A), B=float(B), alpha=float(al), beta=float(be),
                         objective=float(f), grad_norm=grad_norm, converged=bool(grad_norm / scale <= gtol),
                         n_points=n_points, n_starts=n_starts, n_kept=n_kept, flops_per_param_token=k)
