"""Approaches 1 (envelope) and 2 (IsoFLOP parabolas) on synthetic sweeps drawn from a known law."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llm_ray.fitting import budget_groups, fit_envelope, fit_isoflop, fit_power_law
from llm_ray.fitting.approaches import fit_isoflop_group, group_by_flops, profile_bumps
from llm_ray.fitting.bootstrap import draw_run_counts

LAW = dict(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.30)
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])  # N_opt ∝ C^a (Hoffmann et al. 2022 eq. 4)


def law(n, d):
    return LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


def n_opt_true(c, k=6.0):
    g = (LAW["alpha"] * LAW["A"] / (LAW["beta"] * LAW["B"])) ** (1 / (LAW["alpha"] + LAW["beta"]))
    return g * (c / k) ** A_TRUE


def isoflop_sweep(budgets, n_sizes=9, span_dex=0.8, shift_dex=0.0, sigma=0.0, seed=0):
    """Final points of an IsoFLOP ladder per budget, centred (plus shift) on the true N_opt."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        centre = np.log10(n_opt_true(c)) + shift_dex
        for n in 10 ** np.linspace(centre - span_dex, centre + span_dex, n_sizes):
            d = c / (6 * n)
            rows.append((c, n, d, law(n, d) * np.exp(rng.normal(0, sigma))))
    return tuple(np.array(v) for v in zip(*rows))


def test_power_law_fit_recovers_exact_exponent_and_coefficient():
    c = np.geomspace(1e18, 1e22, 7)
    fit = fit_power_law(c, 0.3 * c**0.47)
    assert fit.exponent == pytest.approx(0.47, abs=1e-12)
    assert fit.k == pytest.approx(0.3, rel=1e-9)
    assert fit(1e20) == pytest.approx(0.3 * 1e20**0.47, rel=1e-9)


def test_isoflop_parabolas_recover_the_exponents_of_a_known_law():
    budgets = np.geomspace(1e18, 1e21, 6)
    c, n, d, l = isoflop_sweep(budgets, sigma=0.002)
    groups, _ = budget_groups(c, None, 0.02)
    fit = fit_isoflop(c, n, d, l, groups)
    assert len(fit.used) == 6 and all(g.inside for g in fit.groups)
    assert fit.laws.a == pytest.approx(A_TRUE, abs=0.02)
    assert fit.laws.b == pytest.approx(1 - A_TRUE, abs=0.02)
    for g in fit.groups:  # each vertex within 15% of the true optimum
        assert g.n_opt == pytest.approx(n_opt_true(g.flops), rel=0.15)
        assert g.d_opt * g.n_opt * 6 == pytest.approx(g.flops, rel=1e-9)


def test_minimum_outside_the_sampled_sizes_is_flagged_and_left_out():
    budgets = np.geomspace(1e18, 1e21, 4)
    c, n, d, l = isoflop_sweep(budgets)
    c2, n2, d2, l2 = isoflop_sweep([3e21], n_sizes=5, span_dex=0.3, shift_dex=-0.9)  # ladder far too small
    c, n, d, l = (np.r_[a, b] for a, b in ((c, c2), (n, n2), (d, d2), (l, l2)))
    groups, _ = budget_groups(c, None, 0.02)
    fit = fit_isoflop(c, n, d, l, groups)
    edge = [g for g in fit.groups if g.fitted and not g.inside]
    assert len(edge) == 1 and edge[0].n_opt > edge[0].n_max
    assert "widen the ladder towards larger N" in edge[0].note
    assert edge[0].label not in fit.used and len(fit.used) == 4
    kept = fit_isoflop(c, n, d, l, groups, exclude_edge_minima=False)
    assert edge[0].label in kept.used


def test_a_budget_with_fewer_than_three_sizes_is_reported_not_fitted():
    g = fit_isoflop_group("C1", [1e19, 1e19], [1e8, 2e8], [1.6e10, 0.8e10], [3.0, 2.9])
    assert not g.fitted and "2 distinct sizes N < 3" in g.note


def test_a_single_budget_is_an_error_that_names_the_problem():
    c, n, d, l = isoflop_sweep([1e19])
    with pytest.raises(ValueError, match="1 budget group.*at least 2 budgets"):
        fit_isoflop(c, n, d, l, np.zeros(len(c)))


def test_grouping_by_flops_splits_where_log_c_jumps():
    c = np.array([1.00e19, 1.02e19, 0.99e19, 3.0e19, 3.1e19, 1e20])
    labels = group_by_flops(c, 0.02)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] != labels[5]
    names, how = budget_groups(c, None, 0.02)
    assert len(set(names)) == 3 and "no budget column" in how and "0.02" in how


def test_envelope_of_training_curves_recovers_the_exponent_of_a_known_law():
    """Runs of 16 sizes evaluated at 60 token counts, within the compute range where the sizes bracket
    the true N_opt: the lowest loss per C bin traces N_opt(C)."""
    sizes = np.geomspace(1e6, 1e10, 16)
    tokens = np.geomspace(1e8, 1e13, 60)
    n, d = (v.ravel() for v in np.meshgrid(sizes, tokens))
    c = 6 * n * d
    keep = (c >= 1e18) & (c <= 1e22)
    fit = fit_envelope(c[keep], n[keep], d[keep], law(n[keep], d[keep]), bin_dex=0.1)
    assert len(fit.flops) >= 20
    assert fit.laws.a == pytest.approx(A_TRUE, abs=0.03)
    assert fit.laws.b == pytest.approx(1 - A_TRUE, abs=0.03)
    assert np.all(np.diff(fit.loss) < 0)  # the envelope only goes down with C


def test_envelope_needs_two_compute_levels():
    with pytest.raises(ValueError, match="approach 1: the loss envelope has 1 compute level"):
        fit_envelope([1e19, 1.01e19], [1e8, 2e8], [1.6e10, 0.8e10], [3.0, 2.9])


def test_stratified_resampling_keeps_the_number_of_runs_per_budget():
    strata = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    counts = draw_run_counts(len(strata), 50, seed=3, strata=strata)
    for s in np.unique(strata):
        assert np.all(counts[:, strata == s].sum(axis=1) == (strata == s).sum())
    assert counts.std(axis=0).min() > 0  # runs really are redrawn
    plain = draw_run_counts(len(strata), 50, seed=3)
    assert np.all(plain.sum(axis=1) == len(strata))


def bumpy_profiles(bump: float) -> pd.DataFrame:
    """Three budgets over the same five sizes, each profile a parabola in log N; the middle size
    lifted by `bump` nats at every budget (as one unlucky initialisation shared by a size's cells)."""
    rows = []
    for i, c in enumerate((1e11, 2e11, 4e11)):
        for n in (4e3, 8e3, 16e3, 32e3, 64e3):
            u = np.log(n / (8e3 * 1.4 ** i))
            loss = 4.0 - 0.2 * i + 0.1 * u * u + (bump if n == 16e3 else 0.0)
            rows.append(dict(flops=c, params=n, tokens=c / (6 * n), loss=loss, budget=c))
    return pd.DataFrame(rows)


def test_a_size_above_both_neighbours_is_found_at_every_budget_and_a_unimodal_profile_has_none():
    t = bumpy_profiles(0.3)
    bumps = profile_bumps(t["params"], t["loss"], t["budget"])
    assert list(bumps) == [16e3] and len(bumps[16e3]) == 3
    assert all(0.1 < e < 0.3 for _, e in bumps[16e3])  # the lift, less the rise of the profile towards the higher neighbour
    assert profile_bumps(t["params"], t["loss"], t["budget"], margin=0.5) == {}  # within the noise margin
    smooth = bumpy_profiles(0.0)
    assert profile_bumps(smooth["params"], smooth["loss"], smooth["budget"]) == {}
