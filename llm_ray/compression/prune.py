"""Magnitude pruning with torch.nn.utils.prune: unstructured (one threshold over all targets, or one
per tensor) and 2:4 semi-structured (a pruning method of our own, in torch's own pattern).

Pruning is made permanent (`prune.remove`, which writes the masked values into the original
Parameter object), so a tied head, which is that same object, stays tied and pruned with it.
torch.sparse's semi-structured kernels need CUDA; on CPU the zeros are simply stored as zeros.
"""

from __future__ import annotations

import torch
import torch.nn.utils.prune as prune

from llm_ray.compression.targets import target_parameters


class SemiStructured24(prune.BasePruningMethod):
    """2:4 sparsity: in every 4 consecutive weights along a row's input dimension, keep the 2 of largest
    magnitude (the pattern of NVIDIA's sparse tensor cores; Frantar et al. 2023 found it close to
    unstructured 50%)."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if t.shape[-1] % 4:
            raise ValueError(f"2:4 pruning needs a width divisible by 4, got {tuple(t.shape)}.")
        blocks = t.abs().reshape(-1, 4)  # (rows * width / 4, 4)
        keep = blocks.topk(2, dim=1).indices
        mask = torch.zeros_like(blocks).scatter_(1, keep, 1.0)
        return mask.reshape(t.shape) * default_mask


def prune_(model: torch.nn.Module, method: str, sparsity: float, embedding: bool) -> tuple[int, int]:
    """Prune the target weights of `model` in place: `prune_global` (the smallest |w| over all targets
    together), `prune_layer` (per tensor) at `sparsity`, or `prune_2_4`. Returns (zeros, targets):
    the weights now zero and the weights considered."""
    pairs = [(module, name) for _, module, name in target_parameters(model, embedding)]
    if method == "prune_global":
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=sparsity)
    elif method == "prune_layer":
        for module, name in pairs:
            prune.l1_unstructured(module, name, amount=sparsity)
    elif method == "prune_2_4":
        for module, name in pairs:
            SemiStructured24.apply(module, name)
    else:
        raise ValueError(f"unknown pruning method {method!r}")
    for module, name in pairs:
        prune.remove(module, name)
    weights = [getattr(module, name) for module, name in pairs]
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
