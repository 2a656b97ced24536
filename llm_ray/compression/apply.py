"""The one entry point that applies a compression setting to a model (the tensors it targets: targets.py)."""

from __future__ import annotations

import torch

from llm_ray.compression.prune import prune_
from llm_ray.compression.quantize import quantize_
from llm_ray.compression.targets import target_parameters
from llm_ray.core.compression import BASELINE, QUANT_METHODS, Setting


def compress_(model: torch.nn.Module, setting: Setting) -> dict:
    """Apply `setting` to `model` in place (weights dequantized for the forward pass). Returns what
    was done: weights targeted and weights now zero."""
    model.eval()
    if setting.method == BASELINE:
        return {"target_weights": 0, "zeros": 0}
    if setting.method in QUANT_METHODS:
        n = quantize_(model, setting.bits, setting.group_size, setting.embedding)
        zeros = sum(int((p == 0).sum()) for _, m, a in target_parameters(model, setting.embedding)
                    for p in [getattr(m, a)])
        return {"target_weights": n, "zeros": zeros}
    zeros, n = prune_(model, setting.method, setting.sparsity, setting.embedding)
    return {"target_weights": n, "zeros": zeros}
