"""Round-to-nearest, symmetric weight quantization (quantize, then dequantize for the forward pass).

For a group of weights w (a whole output row for per-channel, `group_size` consecutive weights of a row
for group-wise) and b bits:

    q_max = 2^(b-1) - 1,   scale = max|w| / q_max  (stored in fp16, rounded UP so |w| / scale <= q_max),
    q = clamp(round(w / scale), -q_max, q_max),   w_hat = q * scale,

so every weight is reproduced within scale / 2 = max|w| / (2 q_max) (x (1 + 2^-10) for the fp16 round-up):
one more bit halves the error (Dettmers & Zettlemoyer 2022, Sec. 2; Kumar et al. 2024 use the same RTN).
"""

from __future__ import annotations

from typing import Optional

import torch

from llm_ray.compression.targets import target_parameters


def fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """The fp32 scale rounded up to the nearest fp16 value (as fp32): what storage keeps, never
    smaller than the exact scale, so no weight leaves the code range."""
    half = scale.to(torch.float16)
    up = torch.nextafter(half, torch.full_like(half, float("inf")))
    return torch.where(half.float() < scale, up, half).float()


def quantize_dequantize(w: torch.Tensor, bits: int, group_size: Optional[int] = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_hat, scale): w (rows, width) quantized to `bits` per group along the width and dequantized;
    scale is (rows, width // group_size), one per group. `group_size=None`: one group per row."""
    rows, width = w.shape
    group = group_size or width
    if width % group:
        raise ValueError(f"group size {group} does not divide the width {width}.")
    q_max = 2 ** (bits - 1) - 1
    groups = w.detach().float().reshape(rows, width // group, group)  # (rows, G, group)
    absmax = groups.abs().amax(dim=-1)  # (rows, G)
    if absmax.max() / q_max > torch.finfo(torch.float16).max:
        raise ValueError(f"a weight of magnitude {absmax.max():.3g} overflows an fp16 scale at {bits} bits.")
    scale = fp16_scale(torch.where(absmax > 0, absmax / q_max, torch.ones_like(absmax)))
    q = torch.clamp(torch.round(groups / scale[..., None]), -q_max, q_max)
    return (q * scale[..., None]).reshape(rows, width).to(w.dtype), scale


@torch.no_grad()
def quantize_(model: torch.nn.Module, bits: int, group_size: Optional[int], embedding: bool) -> int:
    """Quantize every target weight of `model` in place (dequantized values); returns the number of
    weights quantized. A tied head shares the embedding's tensor and is quantized with it."""
    n = 0
    for _, module, name in target_parameters(model, embedding):
        p = getattr(module, name)
        p.copy_(quantize_dequantize(p, bits, group_size)[0])
        n += p.numel()
    return n
