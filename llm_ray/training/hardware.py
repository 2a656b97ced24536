"""Peak FLOP/s of one worker, the denominator of MFU."""

from __future__ import annotations

import time

# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts), FLOP/s.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
}


def gpu_peak_flops(device_name: str) -> float | None:
    """Datasheet peak for a CUDA device name such as 'NVIDIA H100 80GB HBM3'; None if unknown."""
    for key, peak in GPU_PEAK_BF16.items():
        if key in device_name:
            return peak
    return None


def measure_matmul_peak(n: int = 1024, seconds: float = 0.5, dtype=None) -> float:
    """Best-of-repeats FLOP/s of an n x n fp32 matmul on this process's threads.

    A measured peak is the honest denominator on a CPU, whose nominal peak depends on the SIMD
    width, clocks and how many cores this worker was given.
    """
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b  # warm-up
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        dt = time.perf_counter() - t0
        best = max(best, 4 * 2 * n ** 3 / dt)
    return best
