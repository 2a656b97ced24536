"""A Llama-style decoder-only Transformer, single-device code (model.family=llama).

Touvron et al. 2023 (LLaMA, Sec. 2.2): pre-normalisation with RMSNorm (Zhang & Sennrich 2019), the
SwiGLU MLP (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6: (Swish(x W) * x V) W2), rotary
position embeddings (Su et al. 2021, RoFormer, Sec. 3.4), no biases; optional QK-norm (an RMSNorm
over each head's queries and keys before the rotation; Dehghani et al. 2023, Sec. 3.1) and tied
embeddings. Parameter names follow llm-ray's GPT-2 model where they mean the same (`wte`,
`blocks`, `lm_head`), so the same checkpoint tools read both. Shapes are commented as (B, T, C).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from llm_ray.core.config import ModelConfig

NORM_EPS = 1e-5
"""RMSNorm's epsilon (Llama 2's)."""


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim / 2) of the angles t * theta^(-2i / head_dim) (RoFormer, eq. 15)."""
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)        # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (first half, second half) pair of x (B, H, T, hd) by its position's angle."""
    x1, x2 = x.float().chunk(2, dim=-1)  # 2 x (B, H, T, hd/2)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.d_model // cfg.n_head
        self.wq = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wo.residual_scaled = True
        self.q_norm = nn.RMSNorm(self.head_dim, eps=NORM_EPS) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=NORM_EPS) if cfg.qk_norm else None
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (w(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
                   for w in (self.wq, self.wk, self.wv))  # 3 x (B, H, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class SwiGLU(nn.Module):
    """W2 (SiLU(x W1) * x W3): three matrices of d x f (Shazeer 2020, eq. 6)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ff_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.d_model, cfg.ff_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ff_dim, cfg.d_model, bias=False)  # down
        self.w2.residual_scaled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, C)


class Block(nn.Module):
    """x + attn(rmsnorm(x)), then x + swiglu(rmsnorm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=NORM_EPS)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=NORM_EPS)
        self.mlp = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=NORM_EPS)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.d_model // cfg.n_head, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # buffers, not parameters: N excludes them
        self.register_buffer("rope_sin", sin, persistent=False)
        self.checkpoint_activations = False  # set by llm_ray.training.engine
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer), as llm-ray's GPT-2 model."""
        if isinstance(module, nn.Linear):
            std = 0.02 / (math.sqrt(2 * self.cfg.n_layer) if getattr(module, "residual_scaled", False) else 1)
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) token ids -> the final normalised hidden states (B, T, C)."""
        T = idx.shape[1]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hd/2)
        x = self.wte(idx)  # (B, T, C)
        for block in self.blocks:
            if self.checkpoint_activations and self.training:
                x = checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)
        return self.norm(x)  # (B, T, C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, V) and, with targets (B, T), the mean cross-entropy in nats per token."""
        logits = self.lm_head(self.hidden(idx))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
