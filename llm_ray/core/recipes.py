"""Named recipes: the opinions of a sweep, each with its source.

A recipe is a rule that turns a cell's coordinates (budget C, shape) into settings. They are named
in config (`sweep.hp_rule`, ...) so that a sweep says which opinion it holds, and pure so that the
plan is computed, printed and tested before anything trains.

Hyper-parameter rules (`sweep.hp_rule`):
- `fixed`: the trainer's lr and global batch for every cell.
- `deepseek`: DeepSeek LLM (2024, eq. 1) power laws in C, lr = 0.3118 * C^-0.1250 and batch
  B = 0.2920 * C^0.3271 tokens, rounded to whole micro-batches.

Shape rule (`aspect`, the only one): d_model a multiple of head_dim, n_layer = round(d_model /
aspect_ratio), d_ff = 4 d_model (Kaplan et al. 2020 found loss flat in aspect ratio over a wide
range; ~32-64 is typical at small scale); the size closest to the target N is taken.
"""

from __future__ import annotations

import math

from llm_ray.core import flops as ledger

HP_RULES = ("fixed", "deepseek")


def check_hp_rule(rule: str) -> None:
    if rule not in HP_RULES:
        raise ValueError(f"sweep.hp_rule={rule!r}: use `fixed` or `deepseek`.")


def hyper_parameters(rule: str, budget: float, *, lr: float, global_batch_tokens: int,
                     batch_quantum: int) -> tuple[float, int]:
    """(lr, global batch tokens) for a cell under the named rule."""
    check_hp_rule(rule)
    if rule == "deepseek":
        b = 0.2920 * budget ** 0.3271
        return 0.3118 * budget ** -0.1250, max(batch_quantum, int(round(b / batch_quantum)) * batch_quantum)
    return lr, global_batch_tokens


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
