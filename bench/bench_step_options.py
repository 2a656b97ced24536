"""What one optimizer step of a tiny sweep cell could gain from torch.compile or a fused optimizer.

    python bench/bench_step_options.py [--threads 1] [--steps 30]

The default sweep's three smallest shapes (2 layers, d_model 8/16/24, vocabulary 512, 8,192 tokens a
step in micro-batches of 16 x 128), each trained by the plain eager loop of bench/plain_loop.py's kind
four ways in one run: eager with torch's default AdamW (foreach), eager with the fused CPU AdamW,
torch.compile (inductor) of the model, and both. Prints ms per step after warm-up, the compile time,
and on its last line each option's speed-up over eager, name=value.
"""

from __future__ import annotations

import argparse
import time

OPTIONS = ("eager", "fused_adamw", "compile", "compile_fused_adamw")


def step_ms(d_model: int, option: str, steps: int) -> tuple[float, float]:
    """(ms per step over `steps` steps, seconds of the 3 warm-up steps: compilation included)."""
    import numpy as np
    import torch

    from llm_ray.core.config import ModelConfig
    from llm_ray.training.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=d_model, n_head=max(1, d_model // 8), vocab_size=512, seq_len=128)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused="fused" in option)
    forward = torch.compile(model) if option.startswith("compile") else model
    rng = np.random.default_rng(0)

    def step() -> None:
        for _ in range(4):  # 4 micro-batches of 16 x 128 = 8,192 tokens
            idx = torch.from_numpy(rng.integers(0, 512, size=(16, 129)))
            _, loss = forward(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())
            (loss / 4).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return 1e3 * (time.perf_counter() - t0) / steps, warm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a sweep cell on 2 cores has 1)")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    speedups = {}
    for d in (8, 16, 24):
        base, _ = step_ms(d, "eager", args.steps)
        print(f"d_model {d}: eager {base:.1f} ms/step", flush=True)
        for option in OPTIONS[1:]:
            ms, warm = step_ms(d, option, args.steps)
            speedups[f"{option}_d{d}"] = base / ms
            print(f"d_model {d}: {option} {ms:.1f} ms/step ({base / ms:.2f}x eager; first 3 steps {warm:.1f} s)",
                  flush=True)
    print(" ".join(f"{k}={v:.2f}" for k, v in speedups.items()))


if __name__ == "__main__":
    main()
