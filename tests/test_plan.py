"""Sweep planning: pure math, milliseconds."""

import math

import pytest

from llm_ray.core import flops as ledger
from llm_ray.core.plan import SweepConfig, cell_key, format_plan, plan_cells
from llm_ray.core.recipes import hyper_parameters, shape_for_params

GRID = dict(seq_len=128, vocab_size=512, tie_embeddings=True, lr=3e-3, global_batch_tokens=2048,
            micro_batch_tokens=2048, warmup_steps=10, num_workers=2)


def test_aspect_rule_shapes_grow_with_target_and_land_near_it():
    counts = []
    for target in (2e4, 1e5, 1e6, 1e7, 1e8):
        s = shape_for_params(target, seq_len=256, vocab_size=4096, aspect_ratio=32, head_dim=32)
        n = ledger.param_count(s).total
        counts.append(n)
        assert s.d_model % 32 == 0 and s.n_layer == max(1, round(s.d_model / 32))
        if target >= 1e6:
            assert abs(math.log(n / target)) < math.log(1.5)  # one head_dim step of width
    assert counts == sorted(counts)


def test_each_cell_spends_its_budget_under_the_exact_ledger():
    cells, _ = plan_cells(SweepConfig(budgets=[1e12, 3e12], sizes=[3e4, 1e5]), **GRID)
    assert len(cells) == 4
    for c in cells:
        shape = ledger.Shape(n_layer=c.n_layer, d_model=c.d_model, n_head=c.n_head, d_ff=c.d_ff,
                             seq_len=128, vocab_size=512)
        spent = ledger.training_flops(shape, c.tokens).exact
        # D is rounded to whole steps: at most half a batch off the budget.
        assert abs(spent - c.budget) <= 0.5 * c.global_batch_tokens * c.flops_per_token
        assert c.steps * c.global_batch_tokens == c.tokens


def test_cells_outside_the_tokens_per_param_band_are_dropped_with_the_reason():
    cells, dropped = plan_cells(SweepConfig(budgets=[1e11], sizes=[1.5e4, 4e5], tokens_per_param=[1, 1000]), **GRID)
    assert [c.params < 1e5 for c in cells] == [True]
    assert len(dropped) == 1 and "outside sweep.tokens_per_param" in dropped[0].reason


def test_cells_with_too_few_steps_for_warmup_are_dropped():
    _, dropped = plan_cells(SweepConfig(budgets=[2e10], sizes=[4e5], min_tokens=1,
                                        tokens_per_param=[0.001, 1e4]), **GRID)
    assert dropped and "warm-up" in dropped[0].reason


def test_deepseek_rule_follows_its_power_laws():
    lr, batch = hyper_parameters("deepseek", 1e20, lr=0, global_batch_tokens=0, batch_quantum=1)
    assert lr == pytest.approx(0.3118 * 1e20 ** -0.125)
    assert batch == round(0.2920 * 1e20 ** 0.3271)
    with pytest.raises(ValueError, match="sweep.hp_rule"):
        hyper_parameters("magic", 1e20, lr=0, global_batch_tokens=0, batch_quantum=1)


def test_small_cells_use_one_worker_and_large_ones_shard():
    cells, _ = plan_cells(SweepConfig(budgets=[1e15], sizes=[1e5, 2e7], shard_above_params=1e6,
                                      tokens_per_param=[0.01, 1e6]), **GRID)
    assert {c.params < 1e6: c.num_workers for c in cells} == {True: 1, False: 2}


def test_cell_key_is_stable_and_changes_with_the_config():
    a = {"model": {"n_layer": 2}, "trainer": {"lr": 1e-3}}
    assert cell_key(a) == cell_key({"trainer": {"lr": 1e-3}, "model": {"n_layer": 2}})
    assert cell_key(a) != cell_key({"model": {"n_layer": 2}, "trainer": {"lr": 2e-3}})


def test_plan_table_lists_every_cell_and_drop():
    cells, dropped = plan_cells(SweepConfig(budgets=[1e11, 1e12], sizes=[1.5e4, 4e5]), **GRID)
    text = format_plan(cells, dropped, 1e10)
    assert text.count("\n") >= len(cells) + len(dropped) + 2
    assert all(f"{c.budget:10.3g}" in text for c in cells)


@pytest.mark.parametrize("kw,field", [(dict(budgets=[]), "sweep.budgets"), (dict(sizes=[-1]), "sweep.sizes"),
                                       (dict(tokens_per_param=[5, 1]), "sweep.tokens_per_param"),
                                       (dict(hp_rule="x"), "sweep.hp_rule")])
def test_bad_sweep_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        plan_cells(SweepConfig(**kw), **GRID)


def test_each_budgets_lowest_loss_cell_is_replicated_with_new_seeds_and_new_names():
    from llm_ray.core.plan import minima_replicates

    cells, _ = plan_cells(SweepConfig(budgets=[1e12, 3e12], sizes=[3e4, 1e5, 3e5]), **GRID)
    losses = {(c.budget, c.params): 3.0 + abs(math.log(c.params / (3e4 if c.budget == 1e12 else 1e5))) for c in cells}
    reps = minima_replicates([(c, losses[c.budget, c.params]) for c in cells], 2)
    assert [(r.budget, r.seed) for r in reps] == [(1e12, 1), (1e12, 2), (3e12, 1), (3e12, 2)]
    best = {b: min((c for c in cells if c.budget == b), key=lambda c: losses[c.budget, c.params]) for b in (1e12, 3e12)}
    assert best[1e12].params < best[3e12].params
    assert all(r.params == best[r.budget].params and r.name == f"{best[r.budget].name}-s{r.seed}" for r in reps)
    assert minima_replicates([(r, 1.0) for r in reps], 1) == []  # a replicate is never replicated again
    with pytest.raises(ValueError, match="sweep.replicate_minima"):
        SweepConfig(replicate_minima=-1)


def test_base_lr_undoes_the_hp_rule_so_a_stage_never_applies_it_twice():
    from llm_ray.core.recipes import base_lr

    for rule in ("width", "fixed"):
        for d in (16, 24, 64, 96):
            lr, _ = hyper_parameters(rule, 1e12, lr=5e-3, global_batch_tokens=2048, batch_quantum=2048, d_model=d)
            assert base_lr(rule, lr, d_model=d) == pytest.approx(5e-3)
