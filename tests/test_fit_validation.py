"""Validation math: forecasts at a held-out point, interval membership, errors, disagreement, support."""

from __future__ import annotations

import numpy as np
import pytest

from llm_ray.fitting.validation import (Check, best_supported, disagreements, forecast_loss, inside,
                                        models_to_validate, overlap, relative_error)

LAW = np.array([2.0, 400.0, 1500.0, 0.34, 0.30])  # E, A, B, alpha, beta


def test_parametric_forecast_is_the_law_at_the_trained_point_with_its_bootstrap_interval():
    rng = np.random.default_rng(0)
    samples = LAW * np.exp(rng.normal(0, 0.02, size=(200, 5)))
    f = forecast_loss("approach3", LAW, samples, n=1e6, d=2e7, c=1.2e14, level=0.9, k=6.0)
    assert f.loss == pytest.approx(2.0 + 400.0 / 1e6 ** 0.34 + 1500.0 / 2e7 ** 0.30)
    assert f.ci[0] < f.loss < f.ci[1]


def test_frontier_forecast_of_approaches_one_and_two_is_the_loss_law_at_c():
    v = np.array([np.log(0.1), 0.5, np.log(1.0), 0.5, np.log(30.0), -0.05])  # k_L = 30, c = -0.05
    f = forecast_loss("approach2", v, None, n=1e6, d=2e7, c=1e14, level=0.9, k=6.0)
    assert f.loss == pytest.approx(30.0 * 1e14 ** -0.05) and f.ci is None


def test_relative_error_and_interval_membership():
    assert relative_error(3.06, 3.0) == pytest.approx(0.02)
    assert inside((2.9, 3.1), 3.0) is True and inside((2.9, 3.1), 3.2) is False
    assert inside(None, 3.0) is None and inside((2.9, 3.1), float("nan")) is None


def test_disjoint_intervals_are_flagged_and_overlapping_ones_are_not():
    assert overlap((1, 2), (2, 3)) is True and overlap((1, 2), (2.1, 3)) is False
    pairs = disagreements({"approach1": (3.22, 3.30), "approach2": (3.15, 3.38), "approach3": (3.37, 3.59)})
    assert pairs == [("approach1", "approach3")]
    assert disagreements({"approach2": None, "approach3": (1, 2)}) == []


def test_the_approach_with_measurements_inside_its_interval_is_supported():
    checks = [Check("approach3", 3.10, (3.0, 3.2), 3.05), Check("approach2", 2.90, (2.8, 3.0), 3.05),
              Check("approach1", 3.04, None, 3.05)]
    assert best_supported(checks) == "approach3"
    assert best_supported([Check("approach3", 3.1, (3.0, 3.2), float("nan"))]) is None


def test_models_to_validate_add_approach_two_only_where_it_differs_by_more_than_a_quarter():
    assert models_to_validate({"approach3": 1e5, "approach2": 1.2e5}) == [(1e5, ("approach3",))]
    assert models_to_validate({"approach3": 1e5, "approach2": 1.3e5}) == [(1e5, ("approach3",)),
                                                                          (1.3e5, ("approach2",))]
    assert models_to_validate({"approach3": float("nan"), "approach2": 2e5}) == [(2e5, ("approach2",))]
    assert models_to_validate({}) == []
