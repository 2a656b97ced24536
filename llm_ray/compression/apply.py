"""Which tensors a setting compresses, and the one entry point that applies a setting to a model."""

from __future__ import annotations

import torch

from llm_ray.core.compression import BASELINE, QUANT_METHODS, Setting


def target_parameters(model: torch.nn.Module, embedding: bool) -> list[tuple[str, torch.nn.Module, str]]:
    """(parameter name, module, attribute) of every target, as `llm_ray.core.compression.targets`
    lists them for the ledger: every Linear weight, and the embedding tables when `embedding`. A tied
    LM head is the token embedding's own tensor and is not listed twice."""
    tied = {id(model.wte.weight)} if hasattr(model, "wte") else set()
    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in tied:
            out.append((f"{name}.weight", module, "weight"))
        elif isinstance(module, torch.nn.Embedding) and embedding:
            out.append((f"{name}.weight", module, "weight"))
    return out


def compress_(model: torch.nn.Module, setting: Setting) -> dict:
    """Apply `setting` to `model` in place (weights dequantized for the forward pass). Returns what
    was done: weights targeted and weights now zero."""
    from llm_ray.compression.prune import prune_
    from llm_ray.compression.quantize import quantize_

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
