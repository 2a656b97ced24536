"""Named recipes: the opinions of a sweep, each with its source.

A recipe is a rule that turns a cell's coordinates (budget C, shape) into settings. They are named
in config (`sweep.hp_rule`, ...) so that a sweep says which opinion it holds, and pure so that the
plan is computed, printed and tested before anything trains.

Learning-rate and batch rules (`sweep.hp_rule`):
- `fixed`: the trainer's lr and global batch for every cell.
- `deepseek`: DeepSeek LLM (2024, eq. 1) power laws in C, lr = 0.3118 * C^-0.1250 and batch
  B = 0.2920 * C^0.3271 tokens, rounded to whole micro-batches.
- `width`: lr = trainer.lr * sweep.width_ref / d_model, batch fixed: Adam's stable and optimal
  step size for hidden matrices shrinks as 1/fan_in (muP, Yang et al. 2022, "Tensor Programs V",
  Table 3), so a wider model gets a proportionally smaller lr; trainer.lr is tuned at d_model =
  sweep.width_ref.

Warm-up rules (`sweep.warmup_rule`):
- `fixed`: trainer.warmup_steps for every cell.
- `fraction`: sweep.warmup_fraction of the cell's own steps (Marin's Delphi recipe: 10% warm-up,
  which fixed its first fit's divergence when extrapolated).
- `params`: as many warm-up tokens as the model has parameters (Porian et al. 2024, "Resolving
  Discrepancies in Compute-Optimal Scaling of Language Models", Sec. 3.3: warm-up = N tokens).
Every rule keeps at least one warm-up step.

Shape rule (`aspect`, the only one): d_model a multiple of head_dim, n_layer = round(d_model /
aspect_ratio) but at least `sweep.min_layers`, d_ff = 4 d_model (Kaplan et al. 2020 found loss flat
in aspect ratio over a wide range; ~32-64 is typical at small scale); the size closest to the target
N is taken. Why a minimum depth: a one-layer Transformer cannot form induction heads (Olsson et al.
2022, "In-context Learning and Induction Heads"), so one- and two-layer models need not lie on one
law L(N, D) (README, "The recipe", for what it did to the forecast here).
"""

from __future__ import annotations

import math

from llm_ray.core import flops as ledger
from llm_ray.core.choices import check_choice

HP_RULES = ("fixed", "deepseek", "width")
WARMUP_RULES = ("fixed", "fraction", "params")


def hyper_parameters(rule: str, budget: float, *, lr: float, global_batch_tokens: int,
                     batch_quantum: int, d_model: int = 0, width_ref: int = 64) -> tuple[float, int]:
    """(lr, global batch tokens) for a cell under the named rule."""
    check_choice("sweep.hp_rule", rule, HP_RULES)
    if rule == "deepseek":
        b = 0.2920 * budget ** 0.3271
        return 0.3118 * budget ** -0.1250, max(batch_quantum, int(round(b / batch_quantum)) * batch_quantum)
    if rule == "width":
        return lr * width_ref / d_model, global_batch_tokens
    return lr, global_batch_tokens


def base_lr(rule: str, cell_lr: float, *, d_model: int, width_ref: int = 64) -> float:
    """The trainer.lr a cell's lr came from under the named rule (the inverse of `hyper_parameters`):
    a stage that rebuilds the sweep's base job from a cell's record must not apply the rule twice."""
    check_choice("sweep.hp_rule", rule, HP_RULES)
    return cell_lr * d_model / width_ref if rule == "width" else cell_lr


def warmup_steps(rule: str, *, steps: int, params: int, batch_tokens: int, fixed: int, fraction: float) -> int:
    """Linear warm-up steps of a cell under the named rule (at least 1)."""
    check_choice("sweep.warmup_rule", rule, WARMUP_RULES)
    if rule == "fraction":
        return max(1, int(round(fraction * steps)))
    if rule == "params":
        return max(1, int(round(params / batch_tokens)))
    return max(1, fixed)


def shape_for_params(target: float, *, aspect_ratio: float, head_dim: int, min_layers: int = 1,
                     make=None, seq_len: int = 0, vocab_size: int = 0, tie_embeddings: bool = True) -> ledger.Shape:
    """The `aspect` shape whose exact total parameter count is closest to `target`:
    d_model a multiple of head_dim, n_layer = max(min_layers, round(d_model / aspect_ratio)),
    d_ff the family's default (4 d for gpt2). N grows monotonically with d_model, so the ladder's
    order is the sizes' order. `make(n_layer, d_model, n_head)` builds the Shape (the plan's context:
    family, seq_len, vocabulary); without it a gpt2 shape of the given seq_len and vocab_size."""
    make = make or (lambda n_layer, d_model, n_head: ledger.Shape(
        n_layer=n_layer, d_model=d_model, n_head=n_head, d_ff=4 * d_model, seq_len=seq_len,
        vocab_size=vocab_size, tie_embeddings=tie_embeddings))
    best = None
    for d_model in range(head_dim, 16385, head_dim):
        s = make(max(min_layers, round(d_model / aspect_ratio)), d_model, d_model // head_dim)
        n = ledger.param_count(s).total
        err = abs(math.log(n / target))
        if best is None or err < best[0]:
            best = (err, s)
        if n > target:
            break
    return best[1]
