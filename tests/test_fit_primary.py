"""The primary forecast: chosen by a leave-the-top-budget-out backtest before any held-out run, its
interval widened by that backtest's error and by the measured run-to-run noise (no Ray, < 1 s)."""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from llm_ray.core.records import FitRecord, ForecastCheck, Registration, RegisteredPrimary, loss_standard_error
from llm_ray.fitting import FitConfig, fit_all, summarize
from llm_ray.fitting.primary import (Backtest, BacktestError, Candidate, Choice, Fold, Minimum, choose,
                                     extrapolation_scale, scaled_error, sd_interval, seed_noise,
                                     top_minimum, widen)
from llm_ray.fitting.validation import models_to_validate
from llm_ray.reporting.markdown import answer_section, evaluation_noise_lines, primary_lines
from llm_ray.reporting.validation import validation_markdown
from test_fit_pipeline import LAW, law, sweep_table

TARGET = Minimum(1e20, 1.6e8, 3.09, "parabola vertex")


def bt(**errors) -> Backtest:
    """Backtest errors by approach: (ln N error, relative loss error)."""
    return Backtest((Fold(TARGET, 3e19, {a: BacktestError(a, 0.0, 0.0, n, l) for a, (n, l) in errors.items()}),), {})


def cand(name, loss=3.0, lo=2.9, hi=3.1, n=1e8):
    return Candidate(name, n, loss, (lo, hi), (n / 1.5, n * 1.5))


CANDS = {"approach1": cand("approach1"), "approach2": cand("approach2"), "approach3": cand("approach3")}


def test_loss_and_n_come_from_the_approaches_that_predicted_the_top_budget_best():
    c = choose(CANDS, bt(approach1=(0.5, -0.05), approach2=(0.01, -0.03), approach3=(-0.4, 0.004)))
    assert (c.rule, c.loss_from, c.n_from) == ("backtest", "approach3", "approach2")
    assert "+0.40%" in c.why and "approach 2 -3.00%" in c.why


def test_a_tie_within_the_noise_goes_to_the_fixed_order_two_three_one_not_to_agreement():
    # approach 1's interval overlaps both others' (it "agrees" most) and is the narrowest: neither matters.
    cands = {"approach2": cand("approach2", 3.0, 2.95, 3.05), "approach3": cand("approach3", 3.0, 2.90, 3.10),
             "approach1": cand("approach1", 3.0, 2.99, 3.01)}
    errors = bt(approach2=(0.10, 0.010), approach3=(0.5, -0.009), approach1=(0.12, 0.004))
    c = choose(cands, errors)
    assert (c.loss_from, c.n_from) == ("approach2", "approach2")  # 0.9% and 1.0% tie (approach 1's loss: below)
    # The noise (sd 0.02 nats of 3.09 = 0.65%) ties all three losses; N: 10% and 12% tie, 50% does not.
    c = choose(cands, errors, noise_sd=0.02)
    assert (c.loss_from, c.n_from) == ("approach2", "approach2") and "ties go to approach 2" in c.why
    no2 = bt(approach3=(0.5, -0.009), approach1=(0.12, 0.004))
    assert choose(cands, no2, noise_sd=0.02).loss_from == "approach3"


def test_approach_ones_loss_is_chosen_only_where_neither_approach_two_nor_three_was_backtested():
    # Approach 1 backtests best on both, by far more than the tie margin: it gives N, never L.
    errors = bt(approach1=(0.01, 0.001), approach2=(0.5, 0.02), approach3=(0.6, 0.03))
    c = choose(CANDS, errors)
    assert (c.loss_from, c.n_from) == ("approach2", "approach1")
    assert "approach 1 backtested better, but its loss is not a candidate" in c.why
    assert choose(CANDS, bt(approach1=(0.01, 0.001), approach3=(0.6, 0.03))).loss_from == "approach3"
    only1 = choose(CANDS, bt(approach1=(0.01, 0.001)))
    assert only1.loss_from == "approach1" and "not a candidate" not in only1.why


def test_without_a_backtest_the_fixed_preference_decides():
    empty = Backtest((), {"approach2": "1 budget"})
    assert choose(CANDS, empty)[:3] == ("fallback", "approach3", "approach3")
    no3 = {k: v for k, v in CANDS.items() if k != "approach3"}
    assert choose(no3, empty)[:3] == ("fallback", "approach2", "approach2")
    with pytest.raises(ValueError, match="no approach"):
        choose({}, empty)


def test_the_interval_adds_the_scaled_backtest_error_and_the_noise_in_quadrature():
    assert widen(3.0, (2.9, 3.2)) == pytest.approx((2.9, 3.2))
    assert widen(3.0, (math.nan, math.nan), rel_error=0.01) == pytest.approx((2.97, 3.03))  # all resamples failed
    lo, hi = widen(3.0, None, rel_error=0.01)
    assert (lo, hi) == pytest.approx((2.97, 3.03))
    z = NormalDist().inv_cdf(0.95)
    lo, hi = widen(3.0, (2.96, 3.03), rel_error=0.01, noise_sd=0.02, level=0.9)
    assert hi - 3.0 == pytest.approx(math.sqrt(0.03 ** 2 + 0.03 ** 2 + (z * 0.02) ** 2))
    assert 3.0 - lo == pytest.approx(math.sqrt(0.04 ** 2 + 0.03 ** 2 + (z * 0.02) ** 2))


def test_an_interval_with_an_astronomical_side_stays_that_wide_without_overflow():
    # Seen in a 6-cell sweep: one bootstrap bound of approach 3 at 1.07e213 nats (a degenerate refit).
    lo, hi = widen(2.297, (2.254, 1.0658784503886625e213), rel_error=0.01, noise_sd=0.02)
    assert hi == pytest.approx(1.0658784503886625e213) and 2.2 < lo < 2.254


def test_the_backtest_error_grows_with_how_far_the_forecast_carries_the_law():
    assert extrapolation_scale(4e20, 1e20, 10 ** 19.5) == pytest.approx(math.log(4) / math.log(10 ** 0.5))
    assert extrapolation_scale(1e21, 1e20, 10 ** 19.5) == pytest.approx(2.0)
    assert extrapolation_scale(1.1e20, 1e20, 1e19) == 1.0  # never below the backtest's own error
    assert extrapolation_scale(1e21, 1e20, 1e18, 1e19) == pytest.approx(1.0)  # a fold a decade out


def test_several_folds_judge_by_their_rms_and_the_margin_combines_them():
    def fold(c, errors):
        return Fold(Minimum(c, 1e8, 3.0, "parabola vertex"), c / 10 ** 0.5,
                    {a: BacktestError(a, 0.0, 0.0, 0.0, l) for a, l in errors.items()})

    # The top budget chooses; the fold below it (3% off for approach 3) widens the interval.
    two = Backtest((fold(1e19, {"approach2": -0.001, "approach3": 0.03}),
                    fold(10 ** 19.5, {"approach2": -0.02, "approach3": 0.005})), {})
    c = choose(CANDS, two)
    assert c.loss_from == "approach3" and "errors of 2 folds" in c.why
    assert two.rms("approach2", "loss_error") == pytest.approx(math.sqrt((0.02 ** 2 + 0.001 ** 2) / 2))
    # 4x beyond a top budget half a decade above its fit: each fold's error scaled by ln 4 / ln 10^0.5.
    scale = math.log(4) / math.log(10 ** 0.5)
    assert scaled_error(two, c, 4 * 10 ** 19.5) == pytest.approx(scale * math.sqrt((0.03 ** 2 + 0.005 ** 2) / 2))
    assert scaled_error(two, Choice("fallback", "approach3", "approach3", "", ()), 1e21) == 0.0


def test_noise_is_the_pooled_spread_of_replicated_cells_and_none_without_replicates():
    final = pd.DataFrame({"budget": [1, 1, 1, 1, 2], "params": [10, 10, 20, 20, 10],
                          "loss": [3.0, 3.2, 2.0, 2.1, 5.0]})
    # ss = 0.02 + 0.005 over 2 degrees of freedom
    assert seed_noise(final).sd == pytest.approx(math.sqrt(0.025 / 2))
    assert seed_noise(final.drop_duplicates(["budget", "params"])).sd is None
    # Without a budget column, the IsoFLOP groups say which runs share a budget.
    assert seed_noise(final.drop(columns="budget"), np.array(["a", "a", "a", "a", "b"])).sd == pytest.approx(
        math.sqrt(0.025 / 2))
    assert seed_noise(final).dof == 2 and seed_noise(final.drop_duplicates(["budget", "params"])).dof == 0


def test_the_seed_sd_interval_is_the_chi_square_one_and_narrows_with_more_replicates():
    from scipy.stats import chi2
    lo, hi = sd_interval(0.04, 3, 0.9)
    assert lo == pytest.approx(0.04 * math.sqrt(3 / chi2.ppf(0.95, 3)))
    assert hi == pytest.approx(0.04 * math.sqrt(3 / chi2.ppf(0.05, 3)))
    assert 0.6 < lo / 0.04 < 0.65 and 2.8 < hi / 0.04 < 3.0  # three replicated cells pin the sd down loosely
    lo6, hi6 = sd_interval(0.04, 6, 0.9)
    assert lo < lo6 < 0.04 < hi6 < hi


def test_the_top_budget_minimum_is_the_vertex_inside_the_sizes_else_the_lowest_cell():
    final = pd.DataFrame({"flops": [1.0, 1.0, 10.0, 10.0], "params": [5, 7, 50, 70], "loss": [3.0, 2.9, 2.5, 2.6]})
    groups = np.array(["a", "a", "b", "b"])
    assert top_minimum(final, groups)[1:] == (50.0, 2.5, "lowest cell")

    class Group:
        label, flops, n_opt, loss_opt, fitted, inside = "b", 10.0, 60.0, 2.45, True, True
    assert top_minimum(final, groups, [Group()])[1:] == (60.0, 2.45, "parabola vertex")


@pytest.fixture(scope="module")
def fitted():
    """A law with a floor, 5 budgets a half decade apart: the frontier power laws of approaches 1 and 2
    have no floor, so carried out they undershoot; approach 3 is the one to bet on."""
    cfg = FitConfig(n_bootstrap=30, predict_flops=[4e20, 1e21], plots=False)
    return fit_all(sweep_table(), cfg)


def test_on_a_law_with_a_floor_the_backtest_picks_approach_three_and_it_holds_at_4x_and_10x(fitted):
    out = fitted
    assert set(out.backtest.errors) == {"approach1", "approach2", "approach3"}
    assert out.backtest.errors["approach2"].loss_error < -0.01  # the floorless power law undershoots
    for p in out.primary([4e20, 1e21]):
        assert p.rule == "backtest" and p.loss_from == "approach3"
        true = law(p.n_opt, p.d_opt)
        assert p.ci[0] <= true <= p.ci[1] and abs(p.loss / true - 1) < 0.015
        assert p.d_opt == pytest.approx(p.flops / (6 * p.n_opt))


def test_fit_json_marks_one_primary_forecast_per_budget_and_the_report_leads_with_it(fitted):
    res = summarize(fitted)
    assert [p["flops"] for p in res["primary"]] == [4e20, 1e21] and res["primary"][0]["rule"] == "backtest"
    assert [f["target"]["flops"] for f in res["backtest"]["folds"]] == pytest.approx([1e19, 3e19, 1e20])
    assert set(res["backtest"]["folds"][-1]["errors"]) == {"approach1", "approach2", "approach3"}
    fit = FitRecord.from_json(res)
    assert fit.primary_at(4e20).loss_from == "approach3"
    lines = answer_section(fit)
    table = [line for line in lines if line.startswith("| 4e+20") or line.startswith("| **4e+20")]
    assert "**primary**" in table[0] and "approach" in table[1]
    assert any(line.startswith("- Chosen by the rule `backtest`") for line in lines)


def test_two_budgets_leave_nothing_to_backtest_so_the_fallback_rule_is_registered():
    out = fit_all(sweep_table(budgets=(1e18, 1e19)), FitConfig(n_bootstrap=0, predict_flops=[4e19], plots=False))
    (p,) = out.primary([4e19])
    assert p.rule == "fallback" and "fewer than 2 are left" in p.why and p.ci[0] == p.ci[1] == p.loss


def test_the_primary_forecasts_size_is_trained_first_and_others_only_where_they_differ():
    n = {"approach3": 1e5, "approach2": 2e5, "approach1": 1.1e5}
    assert models_to_validate(n, first="approach1") == [(1.1e5, ("approach1",)), (2e5, ("approach2",))]
    assert models_to_validate(n, first="approach2") == [(2e5, ("approach2",)), (1e5, ("approach3",))]


def check(approach, predicted, lo, hi, measured=3.05):
    return ForecastCheck(flops=4e12, cell_id="C4e12-N100k-x", params=100_000, tokens=5e6, chosen_by=("approach3",),
                         approach=approach, predicted=predicted, ci=(lo, hi), measured=measured, status="ok",
                         error=(predicted - measured) / measured, inside=lo <= measured <= hi)


def test_does_the_law_hold_leads_with_the_primary_forecast_and_keeps_the_others_as_diagnostics():
    def registration(**primary) -> list:
        return [Registration(fit_key="k", registered_at="", ci_level=0.9, flops=4e12, primary=RegisteredPrimary(
            rule="backtest", n_from="approach3", loss_from="approach2", cell_id="c", why="because",
            **{"loss": 3.06, **primary}))]

    text = validation_markdown([check("primary", 3.06, 3.0, 3.1), check("approach3", 3.10, 3.0, 3.2),
                                check("approach2", 2.9, 2.8, 3.0)], registration(), "approach3", top_budget=1e12)
    assert text.index("`backtest`: N from 3, L from 2") < text.index("Diagnostics:") < text.index("| 3 | 3.1000")
    assert "Primary forecast: mean |error| 0.33%" in text and "1 of 1 measured losses inside" in text
    assert "no seed replicates were trained" in text
    text = validation_markdown([check("primary", 3.06, 3.0, 3.1)], registration(noise_sd=0.01, loss=3.0), None,
                               top_budget=1e12)
    assert "The noise alone allows ±0.55% at C = 4e+12" in text  # 1.645 * 0.01 / 3.0


def test_does_the_law_hold_says_whether_the_recommended_size_beat_the_other_sizes_trained_there():
    other = replace(check("approach2", 3.0, 2.9, 3.1, measured=3.01), cell_id="C4e12-N200k-x", params=200_000)
    worse = validation_markdown([check("primary", 3.06, 3.0, 3.1), other], [], None, top_budget=1e12)
    assert ("the recommended N = 100,000 reached 3.0500; N = 200,000 reached 3.0100: the recommended N was not "
            "the better size, by 0.0400 nats") in worse
    better = validation_markdown([check("primary", 3.06, 3.0, 3.1), replace(other, measured=3.2)], [], None,
                                 top_budget=1e12)
    assert "the recommended N was the better size" in better
    alone = validation_markdown([check("primary", 3.06, 3.0, 3.1)], [], None, top_budget=1e12)
    assert "recommended N" not in alone  # one size trained: nothing to compare


def test_the_evaluation_standard_error_is_sd_over_root_n_of_per_window_losses():
    rng = np.random.default_rng(3)
    for n in (2, 17, 400):
        x = 3.0 + 0.2 * rng.standard_normal(n)
        assert loss_standard_error(n, x.sum(), (x * x).sum()) == pytest.approx(x.std(ddof=1) / math.sqrt(n), rel=1e-9)
    assert math.isnan(loss_standard_error(1, 3.0, 9.0))


def with_seed_replicates(table: pd.DataFrame) -> pd.DataFrame:
    """Each run of the table again under another seed (its loss drawn again): a measured seed noise."""
    again = sweep_table(seed=1)
    again["run_id"] = again["run_id"] + "-s1"
    return pd.concat([table, again], ignore_index=True)


def test_the_report_sets_the_evaluation_noise_beside_the_seed_noise():
    table = with_seed_replicates(sweep_table())
    out = fit_all(table, FitConfig(n_bootstrap=0, predict_flops=[4e20], plots=False))
    fit = FitRecord.from_json(summarize(out))
    sd = fit.primary[0].noise_sd
    assert sd and sd > 0
    table = table.assign(final=True)
    fine = evaluation_noise_lines(fit, table.assign(loss_se=0.1 * sd))
    assert len(fine) == 1 and "0.10x the seed-to-seed sd" in fine[0] and "more finely than seeds" in fine[0]
    coarse = evaluation_noise_lines(fit, table.assign(loss_se=2 * sd))
    assert "2.00x" in coarse[0] and "trainer.eval_tokens" in coarse[0]
    assert evaluation_noise_lines(fit, table) == []  # a table without the column (another lab's): no line


def test_the_report_states_how_many_degrees_of_freedom_the_seed_sd_rests_on():
    fit = FitRecord.from_json(summarize(fit_all(with_seed_replicates(sweep_table()),
                                                FitConfig(n_bootstrap=0, predict_flops=[4e20], plots=False))))
    p = fit.primary[0]
    ok = sweep_table().query("status == 'ok'")
    assert p.noise_dof == ok["run_id"].nunique()  # every finished run trained twice: one degree of freedom each
    lo, hi = sd_interval(p.noise_sd, p.noise_dof, fit.ci_level)
    assert f"{p.noise_dof} degrees of freedom, so the sd itself lies within [{lo:.4f}, {hi:.4f}]" in \
        primary_lines(fit)[-1]


def test_a_table_of_many_budgets_is_backtested_on_its_top_three_only():
    budgets = (1e17, 3e17, 1e18, 3e18, 1e19, 3e19, 1e20)
    out = fit_all(sweep_table(budgets=budgets), FitConfig(n_bootstrap=0, predict_flops=[4e20], plots=False))
    assert [f.target.flops for f in out.backtest.folds] == pytest.approx([1e19, 3e19, 1e20], rel=0.05)
    assert [f.c_below for f in out.backtest.folds] == pytest.approx([3e18, 1e19, 3e19], rel=0.05)
