"""A batched L-BFGS in numpy: many independent minimisations advanced in lock-step.

Why: the parametric fit (approach 3) starts L-BFGS from 4,500 grid points, and the bootstrap refits
the same model hundreds of times. One scipy call per start pays Python overhead per iteration per
start; here every iteration is a handful of numpy operations on an (S, n) array for all S starts at
once, so the cost is that of the arithmetic. Each row keeps its own history, step and stopping state;
rows that have converged drop out of the arithmetic.

Algorithm (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 7.4 and 7.5): two-loop recursion
over the last ``m`` curvature pairs (s, y), initial Hessian scaling gamma = s.y / y.y, backtracking line
search on the Armijo condition f(x + t d) <= f(x) + c1 t g.d (safeguarded quadratic interpolation,
Alg. 3.5's idea). A pair is stored only when s.y > 0, which
keeps the implicit Hessian positive definite without a Wolfe line search.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

BatchedObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""fun(theta (S, P), rows (S,) int) -> (f (S,), grad (S, P)); ``rows`` says which problems the
rows of theta belong to, so that a batch of problems with different data weights can shrink."""


class BatchResult(NamedTuple):
    x: np.ndarray
    """(S, P) final points."""
    f: np.ndarray
    """(S,) objective at x."""
    grad: np.ndarray
    """(S, P) gradient at x."""
    n_iter: np.ndarray
    """(S,) iterations taken by each row."""
    converged: np.ndarray
    """(S,) bool: the row met the gradient or progress tolerance (not just ran out of iterations)."""


def batched_lbfgs(
    fun: BatchedObjective,
    x0: np.ndarray,
    *,
    max_iter: int = 200,
    gtol: float = 1e-8,
    ftol: float = 1e-13,
    memory: int = 10,
    c1: float = 1e-4,
    max_backtrack: int = 40,
) -> BatchResult:
    """Minimise S independent problems from the S rows of ``x0``.

    A row stops when max|grad| <= gtol, when an accepted step lowers f by less than
    ftol * max(|f|, tiny) (relative progress has stalled), or when the line search cannot find a
    decrease (it is then at a minimum to machine precision along its search direction).
    """
    x = np.array(x0, dtype=np.float64, copy=True)
    S, P = x.shape
    rows_all = np.arange(S)
    f, g = fun(x, rows_all)
    s_hist = np.zeros((S, memory, P))
    y_hist = np.zeros((S, memory, P))
    rho = np.zeros((S, memory))
    gamma = 1.0 / np.maximum(1.0, np.abs(g).max(axis=1))
    n_iter = np.zeros(S, dtype=np.int64)
    converged = np.abs(g).max(axis=1) <= gtol
    active = ~converged & np.isfinite(f)  # a start where f is not finite cannot move
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi, xi, fi = g[idx], x[idx], f[idx]
        d = -_two_loop(gi, s_hist[idx], y_hist[idx], rho[idx], gamma[idx], it, memory)
        slope = np.einsum("ij,ij->i", gi, d)
        bad = ~(slope < 0)  # not a descent direction: restart from steepest descent
        if bad.any():
            d[bad] = -gi[bad] * gamma[idx][bad, None]
            slope[bad] = np.einsum("ij,ij->i", gi[bad], d[bad])
            rho[idx[bad]] = 0.0
        x_new, f_new, g_new, stuck = _backtrack(fun, idx, xi, fi, gi, d, slope, c1, max_backtrack)
        moved = ~stuck
        slot = it % memory
        s_vec = x_new[moved] - xi[moved]
        y_vec = g_new[moved] - gi[moved]
        sy = np.einsum("ij,ij->i", s_vec, y_vec)
        yy = np.einsum("ij,ij->i", y_vec, y_vec)
        good = sy > 1e-300
        mi = idx[moved]
        s_hist[mi, slot] = s_vec
        y_hist[mi, slot] = y_vec
        rho[mi, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[mi] = np.where(good, sy / np.where(good, yy, 1.0), gamma[mi])
        rho[idx[stuck], slot] = 0.0
        drop = fi[moved] - f_new[moved]
        x[mi], f[mi], g[mi] = x_new[moved], f_new[moved], g_new[moved]
        n_iter[idx] += 1
        small_g = np.abs(g[mi]).max(axis=1) <= gtol
        stalled = drop <= ftol * np.maximum(np.abs(f[mi]), 1e-300)
        converged[mi] = small_g | stalled
        converged[idx[stuck]] = True
        active[idx] = ~converged[idx]
    return BatchResult(x=x, f=f, grad=g, n_iter=n_iter, converged=converged)


def _backtrack(fun, idx, xi, fi, gi, d, slope, c1: float, max_backtrack: int):
    """Armijo backtracking for every active row at once: (x, f, g) at the accepted step, and which
    rows found no decrease (`stuck`; their x, f, g are left unset)."""
    t = np.ones(idx.size)
    x_new = np.empty_like(xi)
    f_new = np.full(idx.size, np.inf)
    g_new = np.empty_like(gi)
    pending = np.arange(idx.size)
    for _ in range(max_backtrack):
        xp = xi[pending] + t[pending, None] * d[pending]
        fp, gp = fun(xp, idx[pending])
        ok = np.isfinite(fp) & (fp <= fi[pending] + c1 * t[pending] * slope[pending])
        acc = pending[ok]
        x_new[acc], f_new[acc], g_new[acc] = xp[ok], fp[ok], gp[ok]
        # next trial: minimiser of the quadratic through f(0), f'(0), f(t), kept in [0.1 t, 0.5 t]
        fail, tf = ~ok, t[pending[~ok]]
        curv = fp[fail] - fi[pending[fail]] - slope[pending[fail]] * tf
        with np.errstate(all="ignore"):
            t_quad = -slope[pending[fail]] * tf**2 / (2 * curv)
        t_quad = np.where(np.isfinite(t_quad), t_quad, 0.1 * tf)
        pending = pending[fail]
        if pending.size == 0:
            break
        t[pending] = np.clip(t_quad, 0.1 * tf, 0.5 * tf)
    stuck = np.zeros(idx.size, dtype=bool)
    stuck[pending] = True
    return x_new, f_new, g_new, stuck


def _two_loop(g, s_hist, y_hist, rho, gamma, it, memory):
    """H_k g by the L-BFGS two-loop recursion, newest pair first (Nocedal & Wright Alg. 7.4).

    Slots with rho = 0 (never filled, or a pair rejected for s.y <= 0) contribute nothing.
    """
    q = g.copy()
    n_pairs = min(it, memory)
    order = [(it - 1 - j) % memory for j in range(n_pairs)]  # newest first
    alpha = np.zeros((g.shape[0], memory))
    for j in order:
        alpha[:, j] = rho[:, j] * np.einsum("ij,ij->i", s_hist[:, j], q)
        q -= alpha[:, j, None] * y_hist[:, j]
    r = gamma[:, None] * q
    for j in reversed(order):
        beta = rho[:, j] * np.einsum("ij,ij->i", y_hist[:, j], r)
        r += s_hist[:, j] * (alpha[:, j] - beta)[:, None]
    return r
