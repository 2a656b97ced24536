"""The named recipes and the divergence rule: pure functions, milliseconds."""

from __future__ import annotations

import math

import pytest

from llm_ray.core.divergence import LossWatch, patience_steps
from llm_ray.core.plan import SweepConfig, plan_cells
from llm_ray.core.recipes import hyper_parameters, warmup_steps

GRID = dict(seq_len=128, vocab_size=512, tie_embeddings=True, lr=3e-3, global_batch_tokens=2048,
            micro_batch_tokens=2048, warmup_steps=10, num_workers=1)


def test_width_rule_scales_lr_inversely_with_d_model():
    lr16, _ = hyper_parameters("width", 1e12, lr=3e-3, global_batch_tokens=2048, batch_quantum=2048,
                               d_model=16, width_ref=64)
    lr64, batch = hyper_parameters("width", 1e12, lr=3e-3, global_batch_tokens=2048, batch_quantum=2048,
                                   d_model=64, width_ref=64)
    assert lr64 == pytest.approx(3e-3) and lr16 == pytest.approx(1.2e-2) and batch == 2048


@pytest.mark.parametrize("rule,expected", [("fixed", 10), ("fraction", 100), ("params", 49)])
def test_warmup_rules(rule, expected):
    assert warmup_steps(rule, steps=1000, params=100_000, batch_tokens=2048, fixed=10, fraction=0.1) == expected


def test_warmup_is_at_least_one_step():
    assert warmup_steps("params", steps=5, params=100, batch_tokens=2048, fixed=0, fraction=0.1) == 1


def test_plan_applies_the_warmup_rule_per_cell():
    cells, _ = plan_cells(SweepConfig(budgets=[1e12], sizes=[1.5e4, 4e4], warmup_rule="fraction"), **GRID)
    assert all(c.warmup_steps == round(0.1 * c.steps) for c in cells)


def test_cells_above_max_epochs_are_dropped_with_the_reason():
    sweep = SweepConfig(budgets=[1e12], sizes=[1.5e4, 1.4e5], max_epochs=1.0)
    cells, dropped = plan_cells(sweep, **GRID, train_tokens=3_000_000)
    assert [c.params > 1e5 for c in cells] == [True]
    assert all(c.epochs is not None and c.epochs <= 1.0 for c in cells)
    assert len(dropped) == 1 and "sweep.max_epochs=1" in dropped[0].reason and "epochs" in dropped[0].reason


def test_epochs_are_tokens_over_the_train_split():
    (cell,), _ = plan_cells(SweepConfig(budgets=[1e11], sizes=[4e4]), **GRID, train_tokens=1_000_000)
    assert cell.epochs == pytest.approx(cell.tokens / 1_000_000)


def feed(watch: LossWatch, losses) -> list:
    return [watch.update(step, loss) for step, loss in enumerate(losses, start=1)]


def test_a_spike_that_recovers_is_counted_not_a_divergence():
    watch = LossWatch(warmup_steps=5, patience=20)
    losses = [6.2 - 0.05 * i for i in range(40)] + [9.0, 9.5] + [4.0 - 0.01 * i for i in range(60)]
    assert not any(feed(watch, losses))
    assert watch.n_spikes >= 1 and watch.max_spike > 3


def test_nan_is_a_divergence_at_once():
    watch = LossWatch(warmup_steps=5, patience=20)
    reasons = feed(watch, [6.0, 5.9, float("nan")])
    assert reasons[:2] == [None, None] and "nan" in reasons[2]


def test_a_loss_that_stays_above_its_start_is_a_divergence_after_the_patience():
    watch = LossWatch(warmup_steps=5, patience=20)
    reasons = feed(watch, [6.0, 5.5, 5.0] + [8.0] * 60)
    first = next(i for i, r in enumerate(reasons) if r)
    assert "stayed above its initial value" in reasons[first]
    assert 20 <= first <= 40  # the EMA needs a few steps to cross, then 20 steps of patience


def test_warmup_steps_never_count_towards_divergence():
    watch = LossWatch(warmup_steps=100, patience=10)
    assert not any(feed(watch, [6.0] + [7.0] * 99))


def test_patience_is_a_fraction_of_the_run_with_a_floor():
    assert patience_steps(10_000, 0.05) == 500 and patience_steps(100, 0.05) == 20
    assert math.isclose(patience_steps(1001, 0.1), 101)
