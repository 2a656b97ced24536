"""report.md's words: the disagreement flag and the validation verdict (no Ray, milliseconds)."""

from __future__ import annotations

from llm_ray.core.records import BudgetForecast, FitRecord, ForecastCheck
from llm_ray.reporting.markdown import disagreement_lines
from llm_ray.reporting.validation import verdict_lines


def forecast(approach, loss, lo, hi, n=1e5):
    return BudgetForecast(approach=approach, flops=1e13, n_opt=n, d_opt=1e7, loss=loss,
                          ci={"loss": (lo, hi), "n_opt": (n / 2, n * 2)})


def test_report_flags_approaches_whose_loss_intervals_do_not_overlap():
    fit = FitRecord(forecasts=(forecast("approach3", 3.52, 3.45, 3.59), forecast("approach2", 3.25, 3.15, 3.38)))
    (line,) = disagreement_lines(fit)
    assert "disagree" in line and "loss at C = 1e+13" in line and "approach 2" in line and "approach 3" in line


def test_report_says_nothing_when_the_intervals_overlap():
    fit = FitRecord(forecasts=(forecast("approach3", 3.3, 3.2, 3.4), forecast("approach2", 3.25, 3.15, 3.38)))
    assert disagreement_lines(fit) == []


def check(approach, predicted, lo, hi, measured):
    return ForecastCheck(flops=4e12, cell_id="C4e12-N100k-x", params=100_000, tokens=5e6, chosen_by=("approach3",),
                         approach=approach, predicted=predicted, ci=(lo, hi), measured=measured, status="ok",
                         error=(predicted - measured) / measured, inside=lo <= measured <= hi)


def test_verdict_names_the_approach_whose_interval_holds_the_measurement():
    lines = verdict_lines([check("approach3", 3.10, 3.0, 3.2, 3.05), check("approach2", 2.9, 2.8, 3.0, 3.05)],
                          "approach3")
    assert any("support approach 3" in line for line in lines)


def test_verdict_says_when_no_interval_holds_the_measurement():
    lines = verdict_lines([check("approach3", 3.30, 3.25, 3.35, 3.05)], "approach3")
    assert any("No approach's interval holds the measured loss" in line for line in lines)


def test_an_astronomical_interval_bound_is_written_in_a_few_digits():
    from llm_ray.reporting.text import with_interval

    assert with_interval(2.2973, (2.2537, 1.0658784503886625e213), ".4f") == "2.2973 [2.2537, 1.07e+213]"
    assert with_interval(3.52, (3.37, 3.59), ".4f") == "3.5200 [3.3700, 3.5900]"
