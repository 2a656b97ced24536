"""A GPT-2-style decoder-only Transformer, single-device code.

Parallelism, precision and activation checkpointing are applied from outside, in one place
(`llm_ray.training.engine`); this file knows nothing of DeepSpeed or Ray. Shapes are commented as
(B, T, C): batch, time (sequence), channels (d_model).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from llm_ray.core.config import ModelConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual_scaled = True
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.proj.residual_scaled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        # Set by llm_ray.training.engine from deepspeed.activation_checkpointing.
        self.checkpoint_activations = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02); residual projections scaled by 1/sqrt(2 n_layer) so the
        residual stream's variance does not grow with depth (Radford et al. 2019)."""
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_scaled", False):
                std /= math.sqrt(2 * self.cfg.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) token ids. The final, normalised hidden states (B, T, C): what the LM head
        reads, and what a fine-tuning head (llm_ray.finetune) pools."""
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            if self.checkpoint_activations and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_f(x)  # (B, T, C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx, targets: (B, T) token ids. Returns logits (B, T, V) and the mean cross-entropy
        in nats per token when targets are given."""
        logits = self.lm_head(self.hidden(idx))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def num_params(self) -> int:
        """sum(p.numel()) over unique parameters (the tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model a config names: your class (`model._target_`, built as `Class(cfg)`), else
    llm-ray's own of model.family (`gpt2`: Transformer here; `llama`: llm_ray.training.llama)."""
    if cfg._target_:
        import importlib

        module, _, name = cfg._target_.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model._target_={cfg._target_!r} cannot be imported ({err}): put its package on "
                             f"PYTHONPATH (Ray workers inherit it) or install it.") from None
        return cls(cfg)
    if cfg.family == "llama":
        from llm_ray.training.llama import Llama

        return Llama(cfg)
    return Transformer(cfg)


def check_ledger(cfg: ModelConfig) -> int:
    """Build the model on the meta device (no memory) and check that sum(numel) is what the FLOPs
    ledger of model.family counts; returns it. A ValueError names both numbers and the fix: the
    ledger's parameter and FLOP counts are what the planner sizes the sweep by."""
    from llm_ray.core import flops as ledger

    with torch.device("meta"):
        model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    expected = ledger.param_count(cfg.shape()).total
    if n != expected:
        what = f"model._target_={cfg._target_}" if cfg._target_ else f"model.family={cfg.family}"
        raise ValueError(f"{what} has {n:,} parameters but the {cfg.family} ledger counts {expected:,} for "
                         f"this shape: make the module follow model.family's parameter layout (see "
                         f"docs/models-and-data.md), or set model.family to the ledger it follows.")
    return n
