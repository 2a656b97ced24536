"""FLOPs ledger and parameter counts: pure functions, no torch or Ray.

Notation: N = parameters, D = tokens, C = FLOPs. A training step costs forward + backward, and
backward costs twice the forward, so every per-token count here is 3 x its forward count.

Two model families share the ledgers (`Shape.family`): `gpt2` (Radford et al. 2019: learned
positions, LayerNorm, GELU MLP d -> f -> d, optional biases) and `llama` (Touvron et al. 2023,
LLaMA, Sec. 2.2: RMSNorm, Zhang & Sennrich 2019; SwiGLU MLP with three matrices, Shazeer 2020;
rotary positions, Su et al. 2021 RoFormer, which have no parameters and whose few FLOPs, like the
norms', are not counted (Chinchilla's Appendix F counts matmuls, softmax and logits); no biases;
optional QK-norm, an RMSNorm over each head's queries and keys, Dehghani et al. 2023).

Three ledgers, because the literature uses three and a scaling law's exponents depend on which:

- `kaplan`:   C = 6 * N_non_embedding * D                 (Kaplan et al. 2020, Sec. 2.1)
- `exact`:    the operation count of Chinchilla's Appendix F (Hoffmann et al. 2022) for the model
              llm-ray really trains: QKV, attention logits, softmax, attention * V, output
              projection, MLP and the LM head (which matters at small scale: Porian et al. 2024).
              The embedding lookup is a gather, not a matmul, and costs nothing here.
- `deepseek`: C = M * D with M = 72 * n_layer * d_model^2 + 12 * n_layer * d_model * seq_len
              (DeepSeek LLM 2024, eq. 2): non-embedding FLOPs per token including attention.

`table_a4=True` switches `exact` to the convention of Chinchilla's Table A4 (no LM head) so the
published F / 6ND ratios can be reproduced; see tests/test_flops.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional


@dataclass(frozen=True)
class Shape:
    """The shape of a decoder-only Transformer, as the ledger needs it."""

    n_layer: int
    d_model: int
    n_head: int
    d_ff: int
    seq_len: int
    vocab_size: int
    tie_embeddings: bool = True
    bias: bool = True
    head_dim: Optional[int] = None  # None: d_model // n_head
    family: str = "gpt2"
    """`gpt2` or `llama` (module docstring)."""
    qk_norm: bool = False
    """`llama`: RMSNorm over each head's queries and keys (head_dim weights each, per layer)."""

    @property
    def d_attn(self) -> int:
        """Total attention width n_head * head_dim (equals d_model unless head_dim is set)."""
        return self.n_head * (self.head_dim if self.head_dim is not None else self.d_model // self.n_head)


class ParamCount(NamedTuple):
    total: int
    """Every trainable parameter: equals sum(p.numel()) of `llm_ray.training.model.Transformer`."""
    non_embedding: int
    """total minus token embedding, position embedding and an untied LM head (Kaplan's N)."""


FAMILIES = ("gpt2", "llama")


def default_d_ff(family: str, d_model: int) -> int:
    """The MLP width when model.d_ff is not set: 4 d (GPT-2); for SwiGLU's three matrices 8/3 d,
    rounded up to a multiple of 8, which keeps the MLP's parameters at ~8 d^2 (Shazeer 2020, Sec. 2;
    LLaMA rounds to 256, which would swamp the small models of a sweep)."""
    if family == "llama":
        return 8 * -(-(8 * d_model) // 24)  # ceil(8 d / 3 / 8) * 8
    return 4 * d_model


def param_count(s: Shape) -> ParamCount:
    """Exact parameter count of llm-ray's models (`llama`: `_llama_param_count`).

    Per block: two LayerNorms, QKV (d x 3 d_attn), output projection (d_attn x d), MLP (d x f, f x d);
    plus token and learned position embeddings, a final LayerNorm and the LM head (0 when tied).
    """
    if s.family == "llama":
        return _llama_param_count(s)
    d, f, a, b = s.d_model, s.d_ff, s.d_attn, int(s.bias)
    ln = d * (1 + b)
    block = 2 * ln + (d * 3 * a + b * 3 * a) + (a * d + b * d) + (d * f + b * f) + (f * d + b * d)
    emb_tok = s.vocab_size * d
    emb_pos = s.seq_len * d
    head = 0 if s.tie_embeddings else s.vocab_size * d
    total = emb_tok + emb_pos + s.n_layer * block + ln + head
    return ParamCount(total=total, non_embedding=total - emb_tok - emb_pos - head)


def _llama_param_count(s: Shape) -> ParamCount:
    """Per block: two RMSNorm weights (d each), Q, K, V (d x d_attn each), output (d_attn x d), SwiGLU
    (gate and up d x f, down f x d), QK-norm (2 head_dim) if on; no biases, no position table; a
    final RMSNorm (d), the token embedding and the LM head (0 when tied)."""
    d, f, a = s.d_model, s.d_ff, s.d_attn
    block = 2 * d + 3 * d * a + a * d + 3 * d * f + (2 * (a // s.n_head) if s.qk_norm else 0)
    emb_tok = s.vocab_size * d
    head = 0 if s.tie_embeddings else s.vocab_size * d
    total = emb_tok + s.n_layer * block + d + head
    return ParamCount(total=total, non_embedding=total - emb_tok - head)


def _forward_flops_per_sequence(s: Shape, *, include_head: bool) -> float:
    """Chinchilla Appendix F, forward FLOPs for one sequence of length T (a multiply-add = 2)."""
    T, d, a, f = s.seq_len, s.d_model, s.d_attn, s.d_ff
    mlp_mats = 3 if s.family == "llama" else 2
    per_layer = (
        2 * 3 * T * d * a          # Q, K, V projections
        + 2 * T * T * a            # attention logits Q K^T
        + 3 * s.n_head * T * T     # softmax
        + 2 * T * T * a            # attention-weighted values
        + 2 * T * a * d            # output projection
        + 2 * T * mlp_mats * d * f  # MLP: d->f->d (gpt2), or gate and up d->f, down f->d (SwiGLU)
    )
    total = s.n_layer * per_layer
    if include_head:
        total += 2 * T * d * s.vocab_size  # final logits
    return float(total)


class FlopsPerToken(NamedTuple):
    """Training FLOPs per token (forward + backward) under each ledger."""

    kaplan: float
    exact: float
    deepseek: float


def flops_per_token(s: Shape, *, table_a4: bool = False) -> FlopsPerToken:
    """C / D for one training token under the three ledgers (see module docstring)."""
    n = param_count(s)
    exact = 3.0 * _forward_flops_per_sequence(s, include_head=not table_a4) / s.seq_len
    deepseek = 72.0 * s.n_layer * s.d_model ** 2 + 12.0 * s.n_layer * s.d_model * s.seq_len
    return FlopsPerToken(kaplan=6.0 * n.non_embedding, exact=exact, deepseek=deepseek)


LEDGERS = FlopsPerToken._fields


def training_flops(s: Shape, tokens: float) -> FlopsPerToken:
    """C = (FLOPs per token) * D under each ledger."""
    per = flops_per_token(s)
    return FlopsPerToken(*(x * tokens for x in per))


def tokens_for_budget(s: Shape, flops: float, ledger: str = "exact") -> float:
    """D = C / (FLOPs per token): the inverse of `training_flops` (exact float; caller rounds)."""
    return flops / getattr(flops_per_token(s), ledger)


def chinchilla_params(s: Shape) -> int:
    """Chinchilla's own parameter count for Table A4 (tests/data/README.md): per layer
    4d^2 + 4d (attention) + d^2 + 2d (relative positions) + 2 d f + f + d (MLP) + 4d (norms),
    plus 2d (final norm) + d V (output layer); input embeddings excluded."""
    d, f = s.d_model, s.d_ff
    per_layer = 4 * d * d + 4 * d + d * d + 2 * d + 2 * d * f + f + d + 4 * d
    return s.n_layer * per_layer + 2 * d + d * s.vocab_size


def table_a4_ratio(s: Shape) -> float:
    """F / (6 N D) as printed in Chinchilla's Table A4, D = one sequence of seq_len tokens."""
    f = _forward_flops_per_sequence(s, include_head=False) * 3.0
    return f / (6.0 * chinchilla_params(s) * s.seq_len)


def mfu(tokens_per_s: float, flops_per_tok: float, peak_flops: float) -> float:
    """Model FLOPs utilisation = achieved model FLOP/s over peak FLOP/s (PaLM, Appendix B)."""
    return tokens_per_s * flops_per_tok / peak_flops
