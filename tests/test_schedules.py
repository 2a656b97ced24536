"""LR schedules and wsd_branches planning: pure math, milliseconds (plus one torch LambdaLR check)."""

import math

import pytest

from llm_ray.core.branches import drop_unbranchable, plan_trunks, spent_flops
from llm_ray.core.config import TrainerConfig
from llm_ray.core.plan import Cell, SweepConfig
from llm_ray.core.schedules import WARMUP_MIN_RATIO, cooldown_start, wsd_factor

WSD = dict(total_steps=100, warmup_steps=10, cooldown_fraction=0.2)


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
def test_wsd_warms_up_holds_the_peak_then_cools_down_to_its_floor(shape):
    f = lambda step: wsd_factor(step, cooldown_shape=shape, final_ratio=0.0, **WSD)  # noqa: E731
    assert f(0) == pytest.approx(WARMUP_MIN_RATIO)
    assert f(5) == pytest.approx(WARMUP_MIN_RATIO + (1 - WARMUP_MIN_RATIO) * 0.5)
    assert f(10) == 1.0  # warm-up ends at the peak
    assert cooldown_start(100, 0.2) == 80
    assert f(79) == 1.0 and f(80) == 1.0  # the cooldown starts from the peak
    assert f(100) == 0.0  # and ends at its floor
    mid = 1 - math.sqrt(0.5) if shape == "1-sqrt" else 0.5
    assert f(90) == pytest.approx(mid)
    assert all(f(s) > f(s + 1) for s in range(80, 100))  # strictly down through the cooldown


def test_one_sqrt_cools_faster_early_than_linear_and_ends_at_the_floor_ratio():
    sqrt_ = [wsd_factor(s, cooldown_shape="1-sqrt", final_ratio=0.1, **WSD) for s in range(80, 101)]
    lin = [wsd_factor(s, cooldown_shape="linear", final_ratio=0.1, **WSD) for s in range(80, 101)]
    assert all(a < b for a, b in zip(sqrt_[1:-1], lin[1:-1]))
    assert sqrt_[-1] == lin[-1] == pytest.approx(0.1)


def test_a_trunk_without_cooldown_equals_every_branch_up_to_its_cooldown_start():
    trunk = [wsd_factor(s, total_steps=60, warmup_steps=10, cooldown_fraction=0.0) for s in range(61)]
    assert trunk[10:] == [1.0] * 51
    for total in (20, 45, 60, 200):
        start = cooldown_start(total, 0.2)
        branch = [wsd_factor(s, total_steps=total, warmup_steps=10, cooldown_fraction=0.2)
                  for s in range(min(start, 60) + 1)]
        assert branch == trunk[:len(branch)]


def test_lambda_lr_applies_the_factor_of_the_step_it_is_about_to_take():
    torch = pytest.importorskip("torch")
    from llm_ray.training.engine import client_lr_scheduler, deepspeed_json
    from llm_ray.core.config import DeepSpeedConfig, ModelConfig

    t = TrainerConfig(schedule="wsd", tokens=100 * 8192, global_batch_tokens=8192, lr=2.0, warmup_steps=10)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=t.lr)
    sched = client_lr_scheduler(t)(opt)
    seen = []
    for _ in range(101):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([t.lr * wsd_factor(s, **WSD) for s in range(101)])
    assert "scheduler" not in deepspeed_json(DeepSpeedConfig(), t, ModelConfig())  # DeepSpeed's cosine is off
    assert client_lr_scheduler(TrainerConfig()) is None  # cosine: DeepSpeed's WarmupCosineLR from the JSON


def cell(budget, steps, d_model=32, warmup=10):
    return Cell(budget=budget, n_layer=1, d_model=d_model, n_head=2, d_ff=4 * d_model, params=10_000 * d_model,
                params_non_embedding=1, tokens=steps * 1024, steps=steps, global_batch_tokens=1024, lr=3e-3,
                num_workers=1, flops_per_token=1e3 * d_model, warmup_steps=warmup)


def test_three_lengths_branched_cost_the_papers_sixty_percent():
    """Hägele et al. 2024: lengths L, 2L, 3L with 20% cooldowns cost (2.4 + 1.2) / 6 = 0.6."""
    cells = [cell(1e9 * k, 100 * k) for k in (1, 2, 3)]
    (trunk,) = plan_trunks(cells, 0.2)
    assert trunk.points == (80, 160, 240) and trunk.steps == 240
    spent = spent_flops(cells, 0.2)
    assert spent.ratio == pytest.approx(0.6)
    assert spent.independent == pytest.approx(600 * 1024 * 32e3)
    assert spent.n_trunks == 1


def test_cells_of_different_models_or_recipes_get_trunks_of_their_own():
    cells = [cell(1e9, 100), cell(2e9, 200), cell(1e9, 90, d_model=48), cell(3e9, 300, warmup=20)]
    trunks = plan_trunks(cells, 0.2)
    assert sorted(len(t.cells) for t in trunks) == [1, 1, 2]
    spent = spent_flops(cells, 0.2)
    assert spent.n_trunks == 1  # a trunk of one cell is that cell's own run: no saving, no cost
    # Only the shared trunk saves: the shorter cell's 80 constant-lr steps are not trained twice.
    assert spent.independent - spent.branched == pytest.approx((100 - 20) * 1024 * 32e3)


def test_cells_whose_warmup_outlasts_the_constant_phase_are_dropped_with_the_reason():
    kept, dropped = drop_unbranchable([cell(1e9, 11, warmup=10), cell(2e9, 100, warmup=10)], 0.2)
    assert [c.steps for c in kept] == [100]
    assert "ends after the cooldown starts" in dropped[0].reason


@pytest.mark.parametrize("kw,field", [(dict(schedule="step"), "trainer.schedule"),
                                       (dict(cooldown_shape="cosine"), "trainer.cooldown_shape"),
                                       (dict(cooldown_fraction=1.0), "trainer.cooldown_fraction")])
def test_bad_schedule_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        TrainerConfig(**kw)


def test_bad_sweep_schedule_names_the_field():
    with pytest.raises(ValueError, match="sweep.schedule"):
        SweepConfig(schedule="branches")


def test_branched_fraction_warmup_is_the_shortest_cells_and_shared_by_its_trunk():
    from llm_ray.core.branches import shared_warmup

    cells = [cell(1e9, 100, warmup=10), cell(2e9, 300, warmup=30), cell(1e9, 50, d_model=48, warmup=5)]
    shared = shared_warmup(cells, SweepConfig(schedule="wsd_branches", warmup_rule="fraction", warmup_fraction=0.1))
    assert [c.warmup_steps for c in shared] == [10, 10, 5]  # 10% of each model's shortest cell
    assert len(plan_trunks(shared, 0.2)) == 2  # one trunk per model, not one per cell
    assert shared_warmup(cells, SweepConfig(warmup_rule="fixed")) == cells


def test_a_recipe_with_no_shareable_trunk_is_refused_for_branches():
    from llm_ray.core.branches import check_branchable

    with pytest.raises(ValueError, match="sweep.hp_rule=deepseek"):
        check_branchable(SweepConfig(schedule="wsd_branches", hp_rule="deepseek"))
    check_branchable(SweepConfig(schedule="independent", hp_rule="deepseek"))
