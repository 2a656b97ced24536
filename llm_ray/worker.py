"""The per-worker training loop that Ray Train runs on every rank.

It reads everything from its config argument (no module globals): the typed job config, the
prepared data's paths, and where to write its records. Each rank samples its own windows from
(seed, step, rank, micro), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time

from llm_ray import flops as ledger
from llm_ray import storage
from llm_ray.config import batch_geometry, job_from_dict, total_steps


def train_loop_per_worker(config: dict) -> None:
    t_start = time.time()
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist

    from llm_ray import engine as ds_engine
    from llm_ray.data import PreparedData, load_tokens, sample_batch, val_windows
    from llm_ray.hardware import gpu_peak_flops, measure_matmul_peak
    from llm_ray.model import Transformer
    from llm_ray.tracking import RunLogger

    _quiet_ray_train_reports()
    job = job_from_dict(config["job"])
    data = PreparedData.from_dict(config["data"])
    run_dir: str = config["run_dir"]
    in_process = config.get("in_process", False)
    m, t, ds, res = job.model, job.trainer, job.deepspeed, job.resources
    if in_process:
        # A sweep's in-process cell (Ray Train's local mode inside a Tune trial): Ray Train's
        # worker APIs refuse to run in a Tune session, so this rank reports through Tune's.
        rank, world, report = 0, 1, ray.tune.report
    else:
        ctx = ray.train.get_context()
        rank, world, report = ctx.get_world_rank(), ctx.get_world_size(), ray.train.report

    if res.use_gpu:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(res.cpus_per_worker)))
    ds_engine.init_distributed(res.use_gpu)

    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = Transformer(m)
    n_params = model.num_params()
    engine, scheduler = ds_engine.build_engine(model, ds, t, m, res.use_gpu)
    # Under ZeRO-3 each rank holds only its shard (ds_tensor) of every parameter.
    local_numel = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
                      for p in engine.module.parameters())

    steps = total_steps(m, t)
    _, grad_accum = batch_geometry(m, t)
    shape = m.shape()
    per_token = ledger.flops_per_token(shape)
    counts = ledger.param_count(shape)
    assert counts.total == n_params, (counts.total, n_params)  # the ledger counts the real model

    # Resume: weights, optimizer, LR schedule from DeepSpeed; step, history and RNG from us.
    start_step, history, resumed_from = 0, [], None
    ckpt = None if in_process else ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = ds_engine.load(engine, d)
            rng = torch.load(os.path.join(d, f"rng_rank{rank}.pt"), weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        start_step, history = state["step"], state["history"]
        resumed_from = start_step

    if res.use_gpu:
        peak = t.peak_flops or gpu_peak_flops(torch.cuda.get_device_name(device)) or float("nan")
    else:
        peak = t.peak_flops or measure_matmul_peak()

    train_tokens = load_tokens(data.train_path, data.dtype)
    vx, vy = val_windows(load_tokens(data.val_path, data.dtype), m.seq_len, t.eval_tokens)
    per_rank = len(vx) // world
    vx, vy = vx[rank * per_rank:(rank + 1) * per_rank], vy[rank * per_rank:(rank + 1) * per_rank]

    def to_device(a):
        return torch.from_numpy(a).to(device, non_blocking=True)

    def all_mean(value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.item() / world

    @torch.no_grad()
    def evaluate() -> float:
        """Mean loss over the fixed held-out windows (each rank a slice; all ranks run the same
        number of forward passes, which ZeRO-3's parameter gathers require)."""
        engine.eval()
        total = 0.0
        for i in range(0, per_rank, t.micro_batch_size):
            _, loss = engine(to_device(vx[i:i + t.micro_batch_size]), to_device(vy[i:i + t.micro_batch_size]))
            total += loss.item() * len(vx[i:i + t.micro_batch_size])
        engine.train()
        return all_mean(total / per_rank)

    logger = RunLogger(
        enabled=rank == 0, mode=job.wandb.mode, project=job.wandb.project, entity=job.wandb.entity,
        group=job.wandb.group, name=config.get("cell", {}).get("name", t.name), key=t.name,
        job_type="trial" if job.wandb.group else "train",
        directory=job.wandb.dir,
        config={**config["job"], "cell": config.get("cell", {}),
                "params": counts.total, "params_non_embedding": counts.non_embedding})

    fail_now = t.fail_at_step is not None and ckpt is None
    status, reason = "ok", ""
    initial_loss = next((r["train_loss"] for r in history if "train_loss" in r), None)
    t_first_step = t_last_step = None
    train_time = sum(r.get("step_time_s", 0.0) for r in history)
    window_t, window_tokens = time.perf_counter(), 0
    val_loss = None
    step = start_step
    tokens_per_step = t.global_batch_tokens

    def base_row(s: int) -> dict:
        tokens = s * tokens_per_step
        return {"step": s, "tokens": tokens,
                **{f"flops_{k}": v * tokens for k, v in per_token._asdict().items()}}

    if start_step == 0:
        val_loss = evaluate()
        history.append({**base_row(0), "val_loss": val_loss})

    for step in range(start_step, steps):
        if fail_now and step == t.fail_at_step and rank == min(1, world - 1):
            os._exit(1)  # injected crash: no clean-up, like a lost node
        t0 = time.perf_counter()
        if t_first_step is None:
            t_first_step = time.time()
        loss_sum = 0.0
        for micro in range(grad_accum):
            x, y = sample_batch(train_tokens, m.seq_len, t.micro_batch_size,
                                seed=t.seed, step=step, rank=rank, micro=micro)
            _, loss = engine(to_device(x), to_device(y))
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
        train_loss = all_mean(loss_sum / grad_accum)
        step_time = time.perf_counter() - t0
        t_last_step = time.time()
        train_time += step_time
        window_tokens += tokens_per_step
        done = step + 1
        lr = scheduler.get_last_lr()[0]
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")

        if initial_loss is None:
            initial_loss = train_loss
        if not math.isfinite(train_loss):
            status, reason = "diverged", f"train loss {train_loss} at step {done}"
        elif done > t.warmup_steps and train_loss > initial_loss + 0.5:
            status, reason = "diverged", (f"train loss {train_loss:.3f} above its initial value "
                                          f"{initial_loss:.3f} at step {done}")

        is_last = done == steps or status != "ok"
        is_eval = done % t.eval_every == 0 or is_last
        is_log = done % t.log_every == 0 or is_eval
        # In Ray Train's local mode (in-process sweep cells) nothing would persist a checkpoint.
        is_ckpt = ((t.checkpoint_every and done % t.checkpoint_every == 0) or is_last) and not in_process
        row = {**base_row(done), "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm,
               "step_time_s": step_time}
        if is_eval:
            val_loss = evaluate() if status == "ok" else float("nan")
            row["val_loss"] = val_loss
        if is_log:
            elapsed = time.perf_counter() - window_t
            tok_s = window_tokens / elapsed
            row.update(tokens_per_s=tok_s, mfu=ledger.mfu(tok_s, per_token.exact, peak * world))
            window_t, window_tokens = time.perf_counter(), 0
        history.append(row)
        if rank == 0 and is_log:
            logger.log({"step": done, "tokens": row["tokens"], "flops": row["flops_exact"],
                        "train/loss": train_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                        "perf/tokens_per_s": row["tokens_per_s"], "perf/mfu": row["mfu"],
                        **({"val/loss": val_loss} if is_eval else {})})
            eta = (steps - done) * train_time / max(1, done - start_step) if done > start_step else 0
            print(f"[{t.name}] step {done}/{steps} loss {train_loss:.4f}"
                  + (f" val {val_loss:.4f}" if is_eval else "")
                  + f" lr {lr:.2e} tok/s {row['tokens_per_s']:.0f} mfu {row['mfu']:.2f}"
                  + f" eta {eta:.0f}s", flush=True)
            storage.write_json(storage.join(run_dir, "metrics.json"), history)

        metrics = {"step": done, "tokens": row["tokens"], "train_loss": train_loss,
                   "val_loss": val_loss if val_loss is not None else float("nan"), "status": status}
        if is_ckpt:
            tmp = tempfile.mkdtemp(prefix=f"llm-ray-ckpt-r{rank}-")
            try:
                ds_engine.save(engine, tmp, {"step": done, "history": history})
                torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
                           os.path.join(tmp, f"rng_rank{rank}.pt"))
                report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif is_eval:
            report(metrics)
        if status != "ok":
            break

    wall = time.time() - t_start
    if rank == 0:
        tokens = history[-1]["tokens"]
        final = history[-1]
        evals = [r["val_loss"] for r in history if "val_loss" in r]
        record = {
            "run_id": t.name, "status": status, "reason": reason,
            "params": counts.total, "params_non_embedding": counts.non_embedding,
            "tokens": tokens, "steps": final["step"],
            **{f"flops_{k}": v * tokens for k, v in per_token._asdict().items()},
            "final_train_loss": final.get("train_loss"), "final_val_loss": evals[-1] if evals else None,
            "wall_s": wall, "startup_s": (t_first_step - t_start) if t_first_step else None,
            "t_worker_start": t_start, "t_first_step": t_first_step,
            "t_last_step": t_last_step if t_first_step else None, "t_end": time.time(),
            "train_time_s": train_time,
            "tokens_per_s": (tokens - start_step * tokens_per_step) / max(1e-9, train_time_since(history, start_step)),
            "peak_flops_per_worker": peak, "world_size": world, "resumed_from_step": resumed_from,
            "pid": os.getpid(),
            "local_param_fraction": local_numel / n_params,
            "cell": config.get("cell", {}),
            "model": config["job"]["model"], "deepspeed": config["job"]["deepspeed"],
        }
        record["mfu"] = ledger.mfu(record["tokens_per_s"], per_token.exact, peak * world)
        storage.write_json(storage.join(run_dir, "metrics.json"), history)
        storage.write_json(storage.join(run_dir, "result.json"), {**record, "history": history})
        logger.summary({k: v for k, v in record.items() if isinstance(v, (int, float, str))})
        logger.finish()


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO ("Reporting training result ..."), one line per rank per
    report; our own progress line says the same once. Keep its warnings."""
    import logging

    from ray.train.v2._internal.execution import context, storage as ray_storage, train_fn_utils

    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # Ray names this one by file
    for module in (ray_storage, train_fn_utils):  # train_fn_utils: local mode's "Reported metrics"
        logging.getLogger(module.__name__).setLevel(logging.WARNING)


def train_time_since(history: list[dict], start_step: int) -> float:
    """Seconds of optimizer steps (evaluation and checkpointing excluded) after `start_step`."""
    return sum(r.get("step_time_s", 0.0) for r in history if r["step"] > start_step)
