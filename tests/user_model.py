"""Models of a user's own, for tests/test_model_families.py: built by `model._target_`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_ray.training.model import Transformer


class ReluSquaredGPT(Transformer):
    """llm-ray's GPT-2 block with squared-ReLU MLPs (So et al. 2021, Primer): the same parameters
    and matmuls, so model.family=gpt2's ledger counts it exactly."""

    def __init__(self, cfg):
        super().__init__(cfg)
        for block in self.blocks:
            block.mlp.forward = lambda x, mlp=block.mlp: mlp.proj(F.relu(mlp.fc(x)).square())


class ExtraGate(nn.Module):
    """A model the gpt2 ledger does not count (one extra parameter per layer): refused, with the fix."""

    def __init__(self, cfg):
        super().__init__()
        self.body = Transformer(cfg)
        self.gates = nn.Parameter(torch.ones(cfg.n_layer))

    def forward(self, idx, targets=None):
        return self.body(idx, targets)
