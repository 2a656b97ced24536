"""Training throughput: llm-ray (Ray Train + DeepSpeed ZeRO-0, 1 worker) vs a plain PyTorch loop.

    python bench/bench_train.py [--model m10] [--steps 16] [--threads N]

Same model, data, batch, optimizer and threads on both sides, in one run: plain, then llm-ray,
then plain again (the machine's speed drifts by several per cent over minutes on a shared VM; the
ratio is taken against the mean of the two plain runs, and both are printed). Prints the measured
fp32 matmul peak, tokens/s and MFU of each path, and the ratio llm-ray / plain. Tokens/s counts
optimizer-step time only on both sides (after 2 warm-up steps); the llm-ray run's start-up and
end-to-end wall time are printed beside it, and so is the CPU that Ray's own resident processes
(controller, raylet, GCS, helper actors) took from the machine during the training steps: on a
2-core machine that share is what the train worker cannot have.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time



def compose(model: str, steps: int, threads: int, storage: str):
    from llm_ray.cli import compose_train

    tokens = 8192 * steps
    return compose_train(
        f"model={model}", "deepspeed=zero0", "trainer.num_workers=1", f"resources.cpus_per_worker={threads}",
        "trainer.global_batch_tokens=8192", "trainer.micro_batch_size=16", f"trainer.tokens={tokens}",
        "trainer.warmup_steps=2", f"trainer.eval_every={steps}", "trainer.checkpoint_every=0",
        f"trainer.log_every={steps}", "trainer.eval_tokens=4096", f"trainer.storage_path={storage}",
        "trainer.name=bench", "wandb.mode=disabled")


def plain_pytorch(job, data, steps: int, threads: int) -> tuple[float, float]:
    """The plain loop (bench/plain_loop.py) on the job's data: (tokens/s over steps 3..N, seconds per step)."""
    from llm_ray.data import load_split
    from plain_loop import plain_step_seconds

    measured = plain_step_seconds(job.model, job.trainer, load_split(data, "train"), steps, threads)[2:]
    return job.trainer.global_batch_tokens * len(measured) / sum(measured), sum(measured) / len(measured)


class CpuSampler:
    """Samples CPU seconds of every process every `period` s in a thread (psutil ships with Ray)."""

    def __init__(self, period: float = 1.0):
        import threading

        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            snap = {}
            for p in psutil.process_iter(["cmdline"]):
                try:
                    snap[p.pid] = (" ".join(p.info["cmdline"] or []), sum(p.cpu_times()[:2]))
                except psutil.Error:
                    pass
            self.samples.append((time.time(), snap))
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def split(self, t0: float, t1: float) -> tuple[float, float, float]:
        """(train-worker cores, other processes' cores, seconds) between the samples inside [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return float("nan"), float("nan"), 0.0
        (ta, a), (tb, b) = inside[0], inside[-1]
        worker = other = 0.0
        for pid, (name, cpu) in b.items():
            used = cpu - a[pid][1] if pid in a else 0.0
            if "RayTrainWorker" in name:
                worker += used
            else:
                other += used
        return worker / (tb - ta), other / (tb - ta), tb - ta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="m10")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import ray
    import torch

    from llm_ray.core import flops as ledger
    from llm_ray.training.hardware import measure_matmul_peak
    from llm_ray.training.launch import init_ray, prepare, resolve_paths, run_training

    storage = tempfile.mkdtemp(prefix="llm-ray-bench-")
    job = resolve_paths(compose(args.model, args.steps, args.threads, storage))
    data = prepare(job)
    per_token = ledger.flops_per_token(job.model.shape()).exact
    n = ledger.param_count(job.model.shape())

    torch.set_num_threads(args.threads)
    peak = measure_matmul_peak(seconds=2.0)
    print(f"model {args.model}: N = {n.total / 1e6:.2f}M ({n.non_embedding / 1e6:.2f}M non-embedding), "
          f"{per_token / 1e6:.1f} MFLOP/token, batch 8192 tokens, {args.steps} steps, {args.threads} threads")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")

    def plain(label: str) -> float:
        tps, step_s = plain_pytorch(job, data, args.steps, args.threads)
        print(f"plain PyTorch ({label}): {tps:8.0f} tokens/s  MFU {ledger.mfu(tps, per_token, peak):.3f}  "
              f"({step_s:.2f} s/step)", flush=True)
        return tps

    before = plain("before")

    # llm-ray's own local cluster start (init_ray: what `python -m llm_ray.train` does).
    init_ray(job)
    sampler = CpuSampler(period=3.0)
    t0 = time.time()
    rec = run_training(dataclasses.replace(job, trainer=dataclasses.replace(job.trainer, peak_flops=peak)))
    wall = time.time() - t0
    sampler.stop()
    ray.shutdown()
    steps = [r for r in rec.history if r["step"] > 2 and "step_time_s" in r]
    ray_tps = job.trainer.global_batch_tokens * len(steps) / sum(r["step_time_s"] for r in steps)
    ray_mfu = ledger.mfu(ray_tps, per_token, peak)
    print(f"llm-ray (Ray Train + DeepSpeed ZeRO-0, 1 worker): {ray_tps:8.0f} tokens/s  MFU {ray_mfu:.3f}  "
          f"(start-up {rec.startup_s:.1f} s, end-to-end {wall:.1f} s for {args.steps} steps)", flush=True)
    worker_cores, other_cores, span = sampler.split(rec.t_first_step, rec.t_last_step)
    print(f"  during its {span:.0f} s of training steps: train worker {worker_cores:.2f} cores, "
          f"all other processes (Ray's controller, raylet, GCS, helper actors, driver) "
          f"{other_cores:.2f} cores, of {os.cpu_count()}")

    after = plain("after")
    plain_tps = (before + after) / 2
    print(f"ratio llm-ray / plain tokens/s: {ray_tps / plain_tps:.3f}  (plain = mean of before/after; "
          f"against before {ray_tps / before:.3f}, after {ray_tps / after:.3f})")
    print(f"final train loss: plain n/a, llm-ray {rec.final_train_loss:.3f} "
          f"(finite: {math.isfinite(rec.final_train_loss)})")


if __name__ == "__main__":
    main()
