"""A sequence classifier: a Transformer body (pre-trained or fresh) and a linear head on its pooled
final hidden states. Single-device torch, like llm_ray.training.model; the LM head stays tied to
the embedding and is simply not used.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from llm_ray.core.config import ModelConfig
from llm_ray.training.model import Transformer


class Classifier(nn.Module):
    """logits (B, K) = head(pool(body.hidden(idx))). Right padding is harmless: attention is causal,
    so no real token attends to a pad, and pooling reads only the first `lengths` positions."""

    def __init__(self, body: Transformer, n_classes: int, pooling: str = "mean"):
        super().__init__()
        self.body, self.pooling = body, pooling
        self.head = nn.Linear(body.cfg.d_model, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.body.hidden(idx)  # (B, T, C)
        if self.pooling == "last":
            pooled = h[torch.arange(len(idx)), lengths - 1]  # (B, C)
        else:
            mask = (torch.arange(idx.shape[1])[None, :] < lengths[:, None]).to(h.dtype)  # (B, T)
            pooled = (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)  # (B, C)
        return self.head(pooled)  # (B, K)


def build_classifier(model: dict, n_classes: int, pooling: str, seed: int,
                     weights: Optional[str] = None) -> Classifier:
    """A classifier on the body of shape `model` (a ModelConfig dict): the pre-trained fp32 state dict
    at `weights` (a cell's weights.pt), or fresh GPT-2 initialisation (the from-scratch baseline).
    The head (and a fresh body) are drawn from `seed`."""
    import fsspec

    torch.manual_seed(seed)
    body = Transformer(ModelConfig(**model))
    if weights is not None:
        with fsspec.open(weights, "rb") as f:
            body.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    return Classifier(body, n_classes, pooling)
