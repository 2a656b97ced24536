"""Downstream math (pure, milliseconds): scores and intervals, the loss -> accuracy sigmoid, the
two-step forecast, and the config's own checks."""

from __future__ import annotations

import numpy as np
import pytest

from llm_ray.fitting.downstream import (binomial_interval, classification_scores, fit_sigmoid, forecast_accuracy,
                                        min_test_size, sigmoid, sigmoid_samples, widest_halfwidth)


def test_accuracy_and_macro_f1_match_a_hand_computed_case():
    # 6 examples, 3 classes, 3 right. Class 0: predicted at 0, 1, 3, 5 -> TP 2, FP 2, FN 0: P 1/2, R 1,
    # F1 2/3. Class 1: predicted at 2, 4 -> TP 1, FP 1, FN 1: F1 1/2. Class 2: never predicted: F1 0.
    s = classification_scores([0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 1, 0], 3, level=0.9)
    assert s.accuracy == pytest.approx(3 / 6) and s.n == 6 and s.n_correct == 3
    assert s.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert s.accuracy_lo < 0.5 < s.accuracy_hi


def test_clopper_pearson_interval_matches_published_values():
    # Clopper & Pearson (1934) exact 95% interval for 0 of 10: [0, 1 - 0.025^(1/10)] = [0, 0.3085].
    lo, hi = binomial_interval(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1, abs=1e-6)
    lo, hi = binomial_interval(1800, 2000, 0.9)  # a typical result: 90.0% on 2,000 examples
    assert lo == pytest.approx(0.8884, abs=5e-4) and hi == pytest.approx(0.9107, abs=5e-4)


def test_minimum_test_size_gives_the_interval_asked_and_one_less_does_not():
    n = min_test_size(0.03, 0.9)
    assert widest_halfwidth(n, 0.9) <= 0.03 < widest_halfwidth(n - 20, 0.9)
    assert 700 < n < 800  # normal approximation: (1.645 / 0.06)^2 = 752


def test_sigmoid_fitter_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    true = np.array([0.91, 4.2, 3.5])  # ceiling, midpoint, slope; floor 0.5
    loss = np.linspace(3.0, 6.0, 14)
    acc = sigmoid(loss, 0.5, true) + rng.normal(0, 0.003, len(loss))
    fit = fit_sigmoid(loss, acc, 0.5)
    assert fit.ceiling == pytest.approx(0.91, abs=0.01)
    assert fit.midpoint == pytest.approx(4.2, abs=0.05)
    assert fit.slope == pytest.approx(3.5, rel=0.1)
    assert fit.rmse < 0.005 and fit.floor == 0.5
    samples = sigmoid_samples(fit, loss, acc, 100, seed=1)
    lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)
    assert (lo <= true).all() and (true <= hi).all()


def test_sigmoid_needs_three_points():
    with pytest.raises(ValueError, match="at least 3"):
        fit_sigmoid([4.0, 5.0], [0.8, 0.6], 0.5)


def test_two_step_forecast_goes_through_the_sigmoid_and_widens_with_the_loss_uncertainty():
    loss = np.linspace(3.0, 6.0, 10)
    fit = fit_sigmoid(loss, sigmoid(loss, 0.5, [0.9, 4.5, 3.0]), 0.5)
    samples = np.repeat(fit.params()[None, :], 200, axis=0)  # no sigmoid uncertainty
    rng = np.random.default_rng(0)
    tight = np.column_stack([np.full(200, 4.5)])
    wide = np.column_stack([rng.normal(4.5, 0.3, 200)])
    (f_tight,) = forecast_accuracy(fit, samples, [1e13], [4.5], tight, 0.9)
    (f_wide,) = forecast_accuracy(fit, samples, [1e13], [4.5], wide, 0.9)
    assert f_tight.accuracy == pytest.approx(0.7, abs=1e-6)  # midpoint: halfway between 0.5 and 0.9
    assert f_tight.accuracy_ci[1] - f_tight.accuracy_ci[0] < 1e-9
    assert f_wide.accuracy_ci[0] < 0.65 and f_wide.accuracy_ci[1] > 0.75
    assert f_wide.loss_ci[0] < 4.5 < f_wide.loss_ci[1]


def test_config_refuses_an_unknown_task_and_a_test_split_too_small_for_the_interval():
    from llm_ray.finetune.config import DownstreamConfig

    with pytest.raises(ValueError, match="downstream.task='en_news' is not a known task"):
        DownstreamConfig(task="en_news")
    with pytest.raises(ValueError, match=r"downstream.n_test=200 is too small.*n_test >= 7\d\d"):
        DownstreamConfig(n_test=200)
    assert DownstreamConfig(n_test=200, max_ci_halfwidth=0.07).n_test == 200


def test_loss_forecast_refits_the_sweeps_law_from_its_results_table(tmp_path):
    """The first step of the forecast: approach 3 refitted from results.parquet with the sweep's own
    fit config (fit.json) recovers a known law's L_opt(C), with one bootstrap replicate per resample."""
    import pandas as pd

    from llm_ray.fitting import FitConfig
    from llm_ray.fitting.parametric import frontier
    from llm_ray.io import storage
    from llm_ray.reporting.downstream import loss_forecasts
    from llm_ray.sweeps.results import write_results

    law = np.array([2.0, 400.0, 400.0, 0.34, 0.28])
    rows = []
    for c in (1e17, 3e17, 1e18, 3e18):
        for n in np.geomspace(2e7, 5e8, 6):
            d = c / (6 * n)
            loss = law[0] + law[1] / n ** law[3] + law[2] / d ** law[4]
            rows.append({"cell_id": f"C{c:g}-N{n:.3g}", "run_id": f"C{c:g}-N{n:.3g}", "budget": c, "params": n,
                         "tokens": d, "flops": c, "loss": loss, "step": 1, "final": True, "status": "ok",
                         "role": "sweep"})
    write_results(pd.DataFrame(rows), str(tmp_path))
    cfg = FitConfig(n_bootstrap=30, predict_flops=[1e20], flops_per_param_token=6.0)
    storage.write_json(str(tmp_path / "fit.json"), {"config": cfg.to_dict()})
    flops, loss, samples, note = loss_forecasts(str(tmp_path))
    assert flops == [1e20] and note == "" and samples.shape == (30, 1)
    assert loss[0] == pytest.approx(frontier(law, [1e20], 6.0)[2][0], rel=0.01)
