"""The tensors a compression setting targets: shared by quantization, pruning and the entry point."""

from __future__ import annotations

import torch


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
