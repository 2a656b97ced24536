"""The baseline every throughput benchmark compares against: a plain eager PyTorch loop, as a
nanoGPT user writes it (Karpathy, nanoGPT `train.py`): the same model module, AdamW over the same
parameter groups, gradient accumulation over micro-batches, clipping at 1.0; no Ray, no DeepSpeed,
no torch.compile. Shared by bench_train.py and bench_sweep.py."""

from __future__ import annotations

import time

import numpy as np


def plain_step_seconds(model_cfg, trainer_cfg, tokens: np.ndarray, steps: int, threads: int) -> list[float]:
    """Seconds of each of `steps` optimizer steps of the plain loop (the caller drops warm-up steps)."""
    import torch

    from llm_ray.core.config import batch_geometry
    from llm_ray.data import sample_batch
    from llm_ray.training.engine import param_groups
    from llm_ray.training.model import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m, t = model_cfg, trainer_cfg
    model = build_model(m)
    opt = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=tuple(t.betas), eps=t.eps)
    _, accum = batch_geometry(m, t)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        for micro in range(accum):
            x, y = sample_batch(tokens, m.seq_len, t.micro_batch_size, seed=0, step=step, rank=0, micro=micro)
            _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    return times
