"""One run, many token counts: a sweep's cells as cooldown branches of constant-lr trunks.

Under the `wsd` schedule (llm_ray.core.schedules) a cell of S steps follows its model's constant-lr
trajectory up to its cooldown start s0 = S - round(f S), whatever S is. Cells that share a trunk
signature (shape, lr, batch, warm-up, workers: everything but their length) share that trajectory.
So `sweep.schedule=wsd_branches` trains, per signature, one trunk at constant lr to the last s0 its
cells need, checkpointed at every s0, and each cell as a branch: its own cooldown, started from the
trunk's checkpoint at its s0 and ended at its own D (Hägele et al. 2024, arXiv 2405.18392, Sec. 4:
"reusable runs"). The trunk is carried by its longest cell's own run, which goes on into its own
cooldown (llm_ray.sweeps.branches). A branch is a cell like any other: its N, D and C are the
cell's (C counts its own D tokens, trunk part included, once); what the sweep spends is, per trunk,

    C_spent = F * B * (s0_max + sum over its cells of (S - s0))      (F FLOPs/token, B tokens/step)

against F * B * sum of S for independent runs: with three lengths L, 2L, 3L and f = 0.2,
(2.4 + 0.2 * 6) / 6 = 0.6, the paper's 0.57-0.60. Geometric IsoFLOP budgets save less (the longest
run dominates: 5 budgets per size over 1.5 decades, 0.67), more budgets per size save more.

Pure: no torch, Ray or storage here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from llm_ray.core.plan import SWEEP_SCHEDULES, Cell, Dropped, SweepConfig, _count
from llm_ray.core.schedules import cooldown_start

def trunk_signature(cell: Cell) -> tuple:
    """What a cell's constant-lr phase depends on: all of it but its length."""
    return (cell.n_layer, cell.d_model, cell.n_head, cell.d_ff, cell.lr, cell.global_batch_tokens,
            cell.warmup_steps, cell.num_workers, cell.seed)


def check_branchable(sweep: SweepConfig) -> None:
    """Recipes under which no two cells could share a trunk are refused before anything trains."""
    if sweep.schedule == "wsd_branches" and sweep.hp_rule == "deepseek":
        raise ValueError("sweep.schedule=wsd_branches with sweep.hp_rule=deepseek: that rule sets lr and batch per "
                         "budget, so no two cells share a constant-lr trunk; use sweep.hp_rule=width or fixed, or "
                         "sweep.schedule=independent.")


def shared_warmup(cells: list[Cell], sweep: SweepConfig) -> list[Cell]:
    """The cells as `wsd_branches` trains them. The `fraction` warm-up rule (a share of each cell's
    own steps) would give every cell a warm-up, hence a trunk, of its own; branched, it is taken of
    the shortest cell of each model and shared by all of them (a trunk warms up once, and every
    cell's warm-up stays within the fraction of its own steps). Other rules already give one
    warm-up per model."""
    if sweep.warmup_rule != "fraction":
        return cells
    shortest: dict = {}
    for c in cells:
        key = trunk_signature(dataclasses.replace(c, warmup_steps=0))
        shortest[key] = min(shortest.get(key, c.steps), c.steps)
    return [dataclasses.replace(c, warmup_steps=max(1, int(round(
        sweep.warmup_fraction * shortest[trunk_signature(dataclasses.replace(c, warmup_steps=0))]))))
            for c in cells]


def branch_start(cell: Cell, cooldown_fraction: float) -> int:
    """The trunk step a cell's cooldown branch starts from."""
    return cooldown_start(cell.steps, cooldown_fraction)


@dataclass(frozen=True)
class Trunk:
    """One constant-lr run serving the cells of one signature, checkpointed at each cell's s0."""

    cells: tuple
    """The Cells it serves, shortest first."""
    points: tuple
    """Their cooldown starts (steps), sorted, without repeats; the trunk trains to the last."""

    @property
    def steps(self) -> int:
        return self.points[-1]

    @property
    def name(self) -> str:
        return f"trunk-N{_count(self.cells[0].params)}"

    @property
    def flops(self) -> float:
        c = self.cells[0]
        return self.steps * c.global_batch_tokens * c.flops_per_token


def plan_trunks(cells: list[Cell], cooldown_fraction: float) -> list[Trunk]:
    """The cells grouped by trunk signature, in the order their signatures first appear."""
    groups: dict = {}
    for c in cells:
        groups.setdefault(trunk_signature(c), []).append(c)
    trunks = []
    for group in groups.values():
        group = sorted(group, key=lambda c: c.steps)
        points = tuple(sorted({branch_start(c, cooldown_fraction) for c in group}))
        trunks.append(Trunk(cells=tuple(group), points=points))
    return trunks


def cell_flops(cell: Cell) -> float:
    """C of a cell trained on its own: S * B * F (the exact ledger's count of its D tokens)."""
    return cell.steps * cell.global_batch_tokens * cell.flops_per_token


def cooldown_flops(cell: Cell, cooldown_fraction: float) -> float:
    """What a branch trains itself: its cooldown, S - s0 steps."""
    return (cell.steps - branch_start(cell, cooldown_fraction)) * cell.global_batch_tokens * cell.flops_per_token


class SpentFlops(NamedTuple):
    """Training FLOPs one grid costs under each sweep schedule (exact ledger)."""

    independent: float
    """Every cell trained from scratch: sum of the cells' C."""
    trunks: float
    cooldowns: float
    n_cells: int
    n_trunks: int
    """Trunks that serve more than one cell (a trunk of one cell is that cell's own run)."""

    @property
    def branched(self) -> float:
        return self.trunks + self.cooldowns

    @property
    def ratio(self) -> float:
        return self.branched / self.independent


def spent_flops(cells: list[Cell], cooldown_fraction: float) -> SpentFlops:
    trunks = plan_trunks(cells, cooldown_fraction)
    return SpentFlops(independent=sum(cell_flops(c) for c in cells), trunks=sum(t.flops for t in trunks),
                      cooldowns=sum(cooldown_flops(c, cooldown_fraction) for c in cells), n_cells=len(cells),
                      n_trunks=sum(len(t.cells) > 1 for t in trunks))


def format_spent(spent: SpentFlops, schedule: str, cooldown_fraction: float) -> str:
    """Both schedules' cost of the same grid, for the plan printed before anything trains."""
    mark = {s: "  <- this sweep" if s == schedule else "" for s in SWEEP_SCHEDULES}
    return "\n".join([
        f"FLOPs to spend (exact ledger): independent {spent.independent:.3g} ({spent.n_cells} runs){mark['independent']}",
        f"                               wsd_branches {spent.branched:.3g} = {spent.n_trunks} shared trunks "
        f"{spent.trunks:.3g} + {spent.n_cells} cooldowns of {cooldown_fraction:.0%} {spent.cooldowns:.3g} "
        f"({spent.ratio:.2f}x){mark['wsd_branches']}"])


def drop_unbranchable(cells: list[Cell], cooldown_fraction: float) -> tuple[list[Cell], list[Dropped]]:
    """Under `wsd`, a cell whose warm-up ends after its cooldown would start has no constant phase
    to branch from (and is no WSD run): dropped with the reason."""
    kept, dropped = [], []
    for c in cells:
        start = branch_start(c, cooldown_fraction)
        if max(1, c.warmup_steps) <= start:
            kept.append(c)
        else:
            dropped.append(Dropped(budget=c.budget, params=c.params, reason=(
                f"warm-up {c.warmup_steps} steps ends after the cooldown starts (step {start} of {c.steps}, "
                f"trainer.cooldown_fraction={cooldown_fraction:g})")))
    return kept, dropped
