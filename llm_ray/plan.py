"""IsoFLOP sweep planning: pure functions, no Ray or torch.

A plan is the grid budgets C x model sizes N. For each cell, the exact FLOPs ledger gives the tokens
D = C / (FLOPs per token); the global batch gives the steps. Cells that make no sense are dropped with
the reason shown. Opinions are named recipes:

- shape rule `aspect`: d_model = aspect_ratio * n_layer rounded to a multiple of head_dim, d_ff = 4 d
  (Kaplan et al. 2020 found loss flat in aspect ratio over a wide range; ~32-64 is typical at small
  scale), n_layer chosen so the total parameter count is closest to the target N.
- hyper-parameter rule `fixed`: the trainer's lr and global batch for every cell.
- hyper-parameter rule `deepseek`: DeepSeek LLM (2024, eq. 1) power laws in C,
  lr = 0.3118 * C^-0.1250 and batch B = 0.2920 * C^0.3271 tokens, rounded to whole micro-batches.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Optional

from llm_ray import flops as ledger


@dataclass
class SweepConfig:
    """What to sweep. The per-cell training settings come from the trainer/model/data groups."""

    name: str = "isoflop"
    """Sweep name: W&B group, directory name under sweep.storage_path."""
    budgets: list = field(default_factory=lambda: [2e11, 6e11, 2e12])
    """Compute budgets C in FLOPs (exact ledger)."""
    sizes: list = field(default_factory=lambda: [4e4, 8e4, 1.6e5, 3.2e5, 6.4e5])
    """Target total parameter counts N of the ladder (the shape rule picks shapes near them)."""
    shapes: Optional[list] = None
    """Explicit shapes instead of a ladder: list of {n_layer, d_model, n_head[, d_ff]}."""
    shape_rule: str = "aspect"
    aspect_ratio: float = 32.0
    """d_model / n_layer for the `aspect` rule."""
    head_dim: int = 16
    """Per-head width for the `aspect` rule (n_head = d_model / head_dim)."""
    hp_rule: str = "fixed"
    """`fixed` or `deepseek` (see module docstring)."""
    min_tokens: float = 2.0e4
    """Drop cells with fewer training tokens than this."""
    tokens_per_param: list = field(default_factory=lambda: [0.5, 1000.0])
    """Drop cells whose D/N falls outside [low, high]."""
    min_steps_over_warmup: int = 10
    """Drop cells with fewer than warmup_steps + this many optimizer steps."""
    shard_above_params: float = 5.0e7
    """Cells with N above this train on trainer.num_workers ranks; smaller ones on 1 worker
    (sharding a tiny model only adds communication)."""
    train_in_process: bool = True
    """1-worker CPU cells train inside their Tune trial's process (Ray Train's local mode): no
    per-trial Train controller, placement group or worker actor (~14 s of start-up each on 2
    cores), but no mid-cell checkpoints or retries. false: every cell on Ray Train workers."""
    max_concurrent_trials: Optional[int] = None
    """Trials run at once; None: as many as the cluster's CPUs (or GPUs) hold."""
    predict_flops: list = field(default_factory=lambda: [1e13, 1e14])
    """Budgets the report answers for: N_opt, D_opt, predicted loss with intervals."""
    dry_run: bool = False
    """Print the plan and stop."""
    storage_path: Optional[str] = None
    """Sweep directory root (absolute path or URI); None: trainer.storage_path."""
    est_flops_per_s: float = 1.0e10
    """Throughput assumed per worker for the plan's time estimate until measured."""


@dataclass(frozen=True)
class Cell:
    budget: float
    n_layer: int
    d_model: int
    n_head: int
    d_ff: int
    params: int
    params_non_embedding: int
    tokens: float
    steps: int
    global_batch_tokens: int
    lr: float
    num_workers: int
    flops_per_token: float

    @property
    def name(self) -> str:
        """A run name made of sweep coordinates, e.g. `C2e11-N150k`."""
        return f"C{_short(self.budget)}-N{_count(self.params)}"

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


@dataclass(frozen=True)
class Dropped:
    budget: float
    params: int
    reason: str


def shape_for_params(target: float, *, seq_len: int, vocab_size: int, aspect_ratio: float,
                     head_dim: int, tie_embeddings: bool = True) -> ledger.Shape:
    """The `aspect` shape whose exact total parameter count is closest to `target`:
    d_model a multiple of head_dim, n_layer = max(1, round(d_model / aspect_ratio)), d_ff = 4 d.
    N grows monotonically with d_model, so the ladder's order is the sizes' order."""
    best = None
    for d_model in range(head_dim, 16385, head_dim):
        s = ledger.Shape(n_layer=max(1, round(d_model / aspect_ratio)), d_model=d_model,
                         n_head=d_model // head_dim, d_ff=4 * d_model, seq_len=seq_len,
                         vocab_size=vocab_size, tie_embeddings=tie_embeddings)
        n = ledger.param_count(s).total
        err = abs(math.log(n / target))
        if best is None or err < best[0]:
            best = (err, s)
        if n > target:
            break
    return best[1]


def hyper_parameters(rule: str, budget: float, *, lr: float, global_batch_tokens: int,
                     batch_quantum: int) -> tuple[float, int]:
    """(lr, global batch tokens) for a cell under the named rule."""
    if rule == "fixed":
        return lr, global_batch_tokens
    if rule == "deepseek":
        b = 0.2920 * budget ** 0.3271
        return 0.3118 * budget ** -0.1250, max(batch_quantum, int(round(b / batch_quantum)) * batch_quantum)
    raise ValueError(f"sweep.hp_rule={rule!r}: use `fixed` or `deepseek`.")


def plan_cells(sweep: SweepConfig, *, seq_len: int, vocab_size: int, tie_embeddings: bool,
               lr: float, global_batch_tokens: int, micro_batch_tokens: int, warmup_steps: int,
               num_workers: int) -> tuple[list[Cell], list[Dropped]]:
    """The grid budgets x shapes, each cell sized by the exact ledger; dropped cells with reasons."""
    validate_sweep(sweep)
    shapes = []
    if sweep.shapes:
        for s in sweep.shapes:
            d = int(s["d_model"])
            shapes.append(ledger.Shape(n_layer=int(s["n_layer"]), d_model=d, n_head=int(s["n_head"]),
                                       d_ff=int(s.get("d_ff") or 4 * d), seq_len=seq_len,
                                       vocab_size=vocab_size, tie_embeddings=tie_embeddings))
    else:
        for n in sweep.sizes:
            s = shape_for_params(n, seq_len=seq_len, vocab_size=vocab_size, head_dim=sweep.head_dim,
                                 aspect_ratio=sweep.aspect_ratio, tie_embeddings=tie_embeddings)
            if s not in shapes:
                shapes.append(s)
    cells, dropped = [], []
    lo, hi = sweep.tokens_per_param
    for budget in sorted(float(b) for b in sweep.budgets):
        for s in shapes:
            n = ledger.param_count(s)
            per_token = ledger.flops_per_token(s).exact
            tokens = budget / per_token
            cell_lr, batch = hyper_parameters(sweep.hp_rule, budget, lr=lr,
                                              global_batch_tokens=global_batch_tokens,
                                              batch_quantum=micro_batch_tokens * num_workers)
            steps = int(round(tokens / batch))
            reason = None
            if tokens < sweep.min_tokens:
                reason = f"D={tokens:.3g} tokens < sweep.min_tokens={sweep.min_tokens:g}"
            elif not lo <= tokens / n.total <= hi:
                reason = f"D/N={tokens / n.total:.3g} outside sweep.tokens_per_param=[{lo:g}, {hi:g}]"
            elif steps < warmup_steps + sweep.min_steps_over_warmup:
                reason = (f"{steps} steps < warm-up {warmup_steps} + "
                          f"sweep.min_steps_over_warmup={sweep.min_steps_over_warmup}")
            if reason:
                dropped.append(Dropped(budget=budget, params=n.total, reason=reason))
                continue
            cells.append(Cell(
                budget=budget, n_layer=s.n_layer, d_model=s.d_model, n_head=s.n_head, d_ff=s.d_ff,
                params=n.total, params_non_embedding=n.non_embedding, tokens=steps * batch,
                steps=steps, global_batch_tokens=batch, lr=cell_lr,
                num_workers=num_workers if n.total > sweep.shard_above_params else 1,
                flops_per_token=per_token))
    return cells, dropped


def validate_sweep(sweep: SweepConfig) -> None:
    if not sweep.budgets or any(float(b) <= 0 for b in sweep.budgets):
        raise ValueError(f"sweep.budgets={sweep.budgets}: give positive FLOP budgets, e.g. [1e12,3e12].")
    if not sweep.shapes and (not sweep.sizes or any(float(n) <= 0 for n in sweep.sizes)):
        raise ValueError(f"sweep.sizes={sweep.sizes}: give positive parameter counts or sweep.shapes.")
    if sweep.shape_rule != "aspect":
        raise ValueError(f"sweep.shape_rule={sweep.shape_rule!r}: the only rule is `aspect`.")
    if sweep.hp_rule not in ("fixed", "deepseek"):
        raise ValueError(f"sweep.hp_rule={sweep.hp_rule!r}: use `fixed` or `deepseek`.")
    lo_hi = list(sweep.tokens_per_param)
    if len(lo_hi) != 2 or not 0 < lo_hi[0] < lo_hi[1]:
        raise ValueError(f"sweep.tokens_per_param={lo_hi}: give [low, high] with 0 < low < high.")
    if sweep.shapes:
        for s in sweep.shapes:
            if int(s["d_model"]) % int(s["n_head"]):
                raise ValueError(f"sweep.shapes entry {dict(s)}: n_head must divide d_model.")


def cell_key(job_dict: dict) -> str:
    """Content key of a cell's full training config: same config, same key, on any machine."""
    blob = json.dumps(job_dict, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def estimate_seconds(cell: Cell, flops_per_s: float) -> float:
    """Training time of a cell at `flops_per_s` per worker."""
    return cell.budget / (flops_per_s * cell.num_workers)


def format_plan(cells: list[Cell], dropped: list[Dropped], flops_per_s: float) -> str:
    """The plan as a table a person reads before launching."""
    head = f"{'budget C':>10} {'shape (L x d, h)':>18} {'N':>8} {'D':>9} {'D/N':>7} {'steps':>6} {'lr':>8} {'workers':>7} {'est':>6}"
    lines = [head, "-" * len(head)]
    for c in cells:
        lines.append(f"{c.budget:10.3g} {f'{c.n_layer} x {c.d_model}, {c.n_head}':>18} {_count(c.params):>8} "
                     f"{c.tokens:9.3g} {c.tokens_per_param:7.1f} {c.steps:6d} {c.lr:8.2e} {c.num_workers:7d} "
                     f"{estimate_seconds(c, flops_per_s):5.0f}s")
    total = sum(estimate_seconds(c, flops_per_s) for c in cells)
    lines.append(f"{len(cells)} cells, ~{total / 60:.1f} min of training at {flops_per_s:.2g} FLOP/s per worker"
                 " (before parallelism and start-up)")
    for d in dropped:
        lines.append(f"dropped C={d.budget:.3g} N={_count(d.params)}: {d.reason}")
    return "\n".join(lines)


def _short(x: float) -> str:
    """3e+13 -> '3e13', 2.5e12 -> '2.5e12'."""
    m, e = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:.2g}", "0")
    return f"{m}e{int(e)}"


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))
