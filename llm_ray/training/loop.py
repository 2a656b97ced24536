"""The per-worker training loop that Ray Train runs on every rank.

`train_loop_per_worker` reads as a table of contents; each phase of a run is a method of
`WorkerRun`: set-up and resume, one optimizer step, evaluation, logging, checkpoint and report,
and the final record. It reads everything from its config argument (a `RunSpec`, no module
globals). Each rank samples its own windows from (seed, step, rank, micro), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist

from llm_ray.core import flops as ledger
from llm_ray.core.config import batch_geometry, total_steps
from llm_ray.core.divergence import LossWatch, patience_steps
from llm_ray.core.records import RunRecord, bits_per_byte, loss_standard_error
from llm_ray.io import storage


WEIGHTS = "weights.pt"


def train_loop_per_worker(config: dict) -> None:
    run = WorkerRun(config["spec"])  # set-up, and resume from Ray's checkpoint if there is one
    run.evaluate_untrained()
    for step in range(run.start_step, run.steps):
        run.inject_failure(step)
        row = run.train_step(step)
        run.check_divergence(row)
        run.evaluate_and_log(row)
        run.report(row)
        run.save_branch_point(row)
        if run.status != "ok":
            break
    run.write_result()


class WorkerRun:
    """One rank's run: the engine, the data, the history, and the phases that advance them."""

    def __init__(self, spec):
        import ray.train

        from llm_ray.data import load_split, load_tokenizer, val_windows
        from llm_ray.data.shards import eval_bytes_per_token
        from llm_ray.training import engine as ds
        from llm_ray.training.model import build_model

        self.t_start = time.time()
        _quiet_ray_train_reports()
        self.spec, job = spec, spec.job
        self.m, self.t, self.res = job.model, job.trainer, job.resources
        self.in_process = spec.in_process
        if self.in_process:
            # A sweep's in-process cell (Ray Train's local mode inside a Tune trial): Ray Train's
            # worker APIs refuse to run in a Tune session, so this rank reports through Tune's.
            self.rank, self.world, self._report = 0, 1, ray.tune.report
        else:
            ctx = ray.train.get_context()
            self.rank, self.world, self._report = ctx.get_world_rank(), ctx.get_world_size(), ray.train.report
        self.device = self._set_device()
        ds.init_distributed(self.res.use_gpu)

        torch.manual_seed(self.t.seed)  # identical initial weights on every rank
        model = build_model(self.m)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.engine, self.scheduler = ds.build_engine(model, job.deepspeed, self.t, self.m)
        # Under ZeRO-3 each rank holds only its shard (ds_tensor) of every parameter.
        self.local_numel = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
                               for p in self.engine.module.parameters())
        self.steps = total_steps(self.t)
        self.grad_accum = batch_geometry(self.m, self.t)[1]
        self.per_token = ledger.flops_per_token(self.m.shape())
        self.counts = ledger.param_count(self.m.shape())
        assert self.counts.total == self.n_params, (self.counts.total, self.n_params)  # the ledger counts the real model

        self.start_step, self.history, self.resumed_from, self.checkpoint = self._resume()
        self.peak = self._peak_flops()
        self.train_tokens = load_split(spec.data, "train")
        vx, vy = val_windows(load_split(spec.data, "val"), self.m.seq_len, self.t.eval_tokens)
        self.per_rank = len(vx) // self.world
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        self.vx, self.vy = vx[lo:hi], vy[lo:hi]
        # Bytes of held-out text per evaluated token, for the loss in bits per byte beside nats per token.
        self.bytes_per_token = eval_bytes_per_token(load_tokenizer(spec.data.tokenizer_path), vy[:self.per_rank * self.world])
        self.logger = self._logger()

        self.status, self.reason = "ok", ""
        self.watch = LossWatch(warmup_steps=self.t.warmup_steps, spike_nats=self.t.spike_nats,
                               patience=patience_steps(self.steps, self.t.divergence_patience))
        for r in self.history:  # a resumed run's watch continues where the checkpoint left it
            if "train_loss" in r:
                self.watch.update(r["step"], r["train_loss"])
        self.t_first_step = self.t_last_step = None
        self.train_time = sum(r.get("step_time_s", 0.0) for r in self.history)
        self.window_t, self.window_tokens = time.perf_counter(), 0
        self.val_loss = self.val_loss_se = None

    # ---- set-up -------------------------------------------------------------------------------

    def _set_device(self):
        if self.res.use_gpu:
            import ray.train.torch

            device = ray.train.torch.get_device()
            torch.cuda.set_device(device)
            return device
        torch.set_num_threads(max(1, int(self.res.cpus_per_worker)))
        return torch.device("cpu")

    def _resume(self):
        """(start step, history, resumed-from step, Ray checkpoint): from Ray's checkpoint when a
        crashed worker group restarts, else from the branch point the spec starts from, else step 0.
        Weights, optimizer and LR schedule come back through DeepSpeed; step, history and RNG through
        our client state."""
        import ray.train

        from llm_ray.training.points import POINT_DONE

        ckpt = None if self.in_process else ray.train.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                state = self._restore(d)
            return state["step"], state["history"], state["step"], ckpt
        point = self.spec.start_from
        if point is None:
            return 0, [], None, None
        if not storage.exists(storage.join(point, POINT_DONE)):
            raise FileNotFoundError(f"branch point {point} is missing or incomplete (no {POINT_DONE}): "
                                    f"its trunk has not reached that step")
        with storage.local_copy(point) as d:
            state = self._restore(d)
        return state["step"], state["history"], state["step"], None

    def _restore(self, directory: str) -> dict:
        from llm_ray.training import engine as ds

        state = ds.load(self.engine, directory)
        rng = torch.load(os.path.join(directory, f"rng_rank{self.rank}.pt"), weights_only=True)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(numpy_rng_from_tensors(rng))
        return state

    def _peak_flops(self) -> float:
        from llm_ray.training.hardware import gpu_peak_flops, measure_matmul_peak

        if self.res.use_gpu:
            return self.t.peak_flops or gpu_peak_flops(torch.cuda.get_device_name(self.device)) or float("nan")
        return self.t.peak_flops or measure_matmul_peak()

    def _logger(self):
        from llm_ray.io.tracking import RunLogger

        job = self.spec.job
        return RunLogger(
            job.wandb, enabled=self.rank == 0, name=self.spec.cell.get("name", self.t.name), key=self.t.name,
            job_type="trial" if job.wandb.group else "train",
            config={**dataclasses.asdict(job), "cell": dict(self.spec.cell), "params": self.counts.total,
                    "params_non_embedding": self.counts.non_embedding},
            keep_in=self.spec.run_dir)

    # ---- the phases of a step -------------------------------------------------------------------

    def base_row(self, step: int) -> dict:
        tokens = step * self.t.global_batch_tokens
        return {"step": step, "tokens": tokens,
                **{f"flops_{k}": v * tokens for k, v in self.per_token._asdict().items()}}

    def evaluate_untrained(self) -> None:
        if self.start_step == 0:
            self.val_loss = self.evaluate()
            self.history.append({**self.base_row(0), "val_loss": self.val_loss, "val_loss_se": self.val_loss_se,
                                 "val_bpb": bits_per_byte(self.val_loss, self.bytes_per_token)})

    def inject_failure(self, step: int) -> None:
        """trainer.fail_at_step: a test's lost node (first attempt only, no clean-up)."""
        if (self.t.fail_at_step is not None and self.checkpoint is None and step == self.t.fail_at_step
                and self.rank == min(1, self.world - 1)):
            os._exit(1)

    def train_step(self, step: int) -> dict:
        """One optimizer step over grad_accum micro-batches; returns the step's history row."""
        from llm_ray.data import sample_batch
        from llm_ray.training import engine as ds

        t0 = time.perf_counter()
        if self.t_first_step is None:
            self.t_first_step = time.time()
        # Summed on the device and read once per step: a .item() per micro-batch would make the
        # CPU wait for the GPU before launching the next one.
        loss_sum, grad_norm = torch.zeros((), dtype=torch.float64, device=self.device), None
        for micro in range(self.grad_accum):
            x, y = sample_batch(self.train_tokens, self.m.seq_len, self.t.micro_batch_size,
                                seed=self.t.seed, step=step, rank=self.rank, micro=micro)
            _, loss = self.engine(self._to_device(x), self._to_device(y))
            self.engine.backward(loss)
            if micro == self.grad_accum - 1:  # the accumulation boundary: gradients are complete
                grad_norm = ds.grad_norm_before_step(self.engine)
            self.engine.step()
            loss_sum += loss.detach()
        train_loss = self._all_mean(loss_sum.item() / self.grad_accum)
        step_time = time.perf_counter() - t0
        self.t_last_step = time.time()
        self.train_time += step_time
        self.window_tokens += self.t.global_batch_tokens
        if grad_norm is None:
            grad_norm = self.engine.get_global_grad_norm()
        return {**self.base_row(step + 1), "train_loss": train_loss, "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "step_time_s": step_time}

    def check_divergence(self, row: dict) -> None:
        """The divergence rule (llm_ray.core.divergence): stop on a non-finite loss, or on a smoothed
        loss that stays above its initial value; count spikes and go on."""
        reason = self.watch.update(row["step"], row["train_loss"])
        if reason:
            self.status, self.reason = "diverged", reason

    def is_last(self, row: dict) -> bool:
        return row["step"] == self.steps or self.status != "ok"

    def is_eval(self, row: dict) -> bool:
        return row["step"] % self.t.eval_every == 0 or self.is_last(row)

    def evaluate_and_log(self, row: dict) -> None:
        """Validation loss, throughput and MFU on their cadences; the W&B row and the console line."""
        is_eval = self.is_eval(row)
        is_log = row["step"] % self.t.log_every == 0 or is_eval
        if is_eval:
            if self.status == "ok":
                self.val_loss = self.evaluate()
            else:
                self.val_loss = self.val_loss_se = float("nan")
            row["val_loss"], row["val_loss_se"] = self.val_loss, self.val_loss_se
            row["val_bpb"] = bits_per_byte(self.val_loss, self.bytes_per_token)
        if is_log:
            tok_s = self.window_tokens / (time.perf_counter() - self.window_t)
            row.update(tokens_per_s=tok_s, mfu=ledger.mfu(tok_s, self.per_token.exact, self.peak * self.world))
            self.window_t, self.window_tokens = time.perf_counter(), 0
        self.history.append(row)
        if self.rank == 0 and is_log:
            self._log(row, is_eval)

    def _log(self, row: dict, is_eval: bool) -> None:
        done = row["step"]
        self.logger.log({"step": done, "tokens": row["tokens"], "flops": row["flops_exact"],
                         "train/loss": row["train_loss"], "train/lr": row["lr"], "train/grad_norm": row["grad_norm"],
                         "perf/tokens_per_s": row["tokens_per_s"], "perf/mfu": row["mfu"],
                         **({"val/loss": self.val_loss, "val/bpb": row["val_bpb"]} if is_eval else {})})
        steps_run = done - self.start_step
        eta = (self.steps - done) * self.train_time / steps_run if steps_run > 0 else 0
        print(f"[{self.t.name}] step {done}/{self.steps} loss {row['train_loss']:.4f}"
              + (f" val {self.val_loss:.4f}" if is_eval else "")
              + f" lr {row['lr']:.2e} tok/s {row['tokens_per_s']:.0f} mfu {row['mfu']:.2f} eta {eta:.0f}s",
              flush=True)
        storage.write_json(storage.join(self.spec.run_dir, "metrics.json"), self.history)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed held-out windows (each rank a slice; all ranks run the same
        number of forward passes, which ZeRO-3's parameter gathers require). Sets self.val_loss_se,
        its standard error over the windows, from each window's own cross-entropy."""
        import torch.nn.functional as F

        self.engine.eval()
        # loss x windows (the model's own loss), windows, and each window's cross-entropy summed and squared
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for i in range(0, self.per_rank, self.t.micro_batch_size):
            y = self._to_device(self.vy[i:i + self.t.micro_batch_size])
            logits, loss = self.engine(self._to_device(self.vx[i:i + self.t.micro_batch_size]), y)
            per_window = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(dim=1).double()
            sums += torch.stack([loss.detach().double() * len(y), torch.ones((), dtype=torch.float64,
                                 device=self.device) * len(y), per_window.sum(), per_window.square().sum()])
        self.engine.train()
        dist.all_reduce(sums)
        total_loss, n, total, total_sq = sums.tolist()
        self.val_loss_se = loss_standard_error(n, total, total_sq)
        return total_loss / n

    def report(self, row: dict) -> None:
        """Metrics to Ray on evaluation steps; with a checkpoint every trainer.checkpoint_every steps
        and at the end (each rank saves its ZeRO shard; Ray merges them into one checkpoint)."""
        metrics = {"step": row["step"], "tokens": row["tokens"], "train_loss": row["train_loss"],
                   "val_loss": self.val_loss if self.val_loss is not None else float("nan"), "status": self.status}
        every = self.t.checkpoint_every
        # In Ray Train's local mode (in-process sweep cells) nothing would persist a checkpoint.
        if ((every and row["step"] % every == 0) or self.is_last(row)) and not self.in_process:
            self._report_with_checkpoint(metrics, row["step"])
        elif self.is_eval(row):
            self._report(metrics)

    def _report_with_checkpoint(self, metrics: dict, step: int) -> None:
        import ray.train

        tmp = self._save_state(step)
        try:
            self._report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _save_state(self, step: int) -> str:
        """This rank's part of a checkpoint (its ZeRO shard, the module states on rank 0, its RNG,
        step and history) in a new local temporary directory, whose path is returned."""
        from llm_ray.training import engine as ds

        tmp = tempfile.mkdtemp(prefix=f"llm-ray-ckpt-r{self.rank}-")
        ds.save(self.engine, tmp, {"step": step, "history": self.history})
        torch.save({"torch": torch.get_rng_state(), **numpy_rng_as_tensors()},
                   os.path.join(tmp, f"rng_rank{self.rank}.pt"))
        return tmp

    def save_branch_point(self, row: dict) -> None:
        """A trunk's checkpoint at one of its branches' cooldown starts (spec.save_at), on storage
        where any node's branch trial reads it: every rank adds its files to
        <trunk_dir>/points/step-<step>, then rank 0 writes point.json, which marks the point complete."""
        from llm_ray.training.points import POINT_DONE, branch_point_url

        step = row["step"]
        if step not in self.spec.save_at or self.status != "ok":
            return
        url = branch_point_url(self.spec.trunk_dir, step)
        tmp = self._save_state(step)
        try:
            storage.upload_dir(tmp, url)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        if self.rank == 0:
            storage.write_json(storage.join(url, POINT_DONE), {
                "step": step, "tokens": row["tokens"], "train_loss": row["train_loss"], "world_size": self.world})

    # ---- the end ---------------------------------------------------------------------------------

    def write_result(self) -> None:
        """Rank 0 writes the final weights, metrics.json and, last, result.json (a RunRecord: a run
        with a result.json is finished, so everything it names exists), and closes its W&B run."""
        weights = self.save_weights()
        if self.rank != 0:
            return
        record = self.final_record(weights)
        storage.write_json(storage.join(self.spec.run_dir, "metrics.json"), self.history)
        storage.write_json(storage.join(self.spec.run_dir, "result.json"), record.to_json())
        self.logger.summary({k: v for k, v in dataclasses.asdict(record).items() if isinstance(v, (int, float, str))})
        self.logger.finish()

    def save_weights(self):
        """weights.pt beside result.json: the fp32 state dict (every rank joins the ZeRO-3 gather)."""
        if not self.t.save_weights or self.status != "ok":
            return None
        import io

        from llm_ray.training import engine as ds

        state = ds.full_state_dict(self.engine)
        if self.rank == 0:
            buf = io.BytesIO()
            torch.save(state, buf)
            storage.write_bytes_atomic(storage.join(self.spec.run_dir, WEIGHTS), buf.getvalue())
        return WEIGHTS

    def final_record(self, weights) -> RunRecord:
        final = self.history[-1]
        tokens = final["tokens"]
        evals = [r["val_loss"] for r in self.history if "val_loss" in r]
        trained = tokens - self.start_step * self.t.global_batch_tokens
        tok_s = trained / max(1e-9, train_time_since(self.history, self.start_step))
        return RunRecord(
            run_id=self.t.name, status=self.status, reason=self.reason,
            params=self.counts.total, params_non_embedding=self.counts.non_embedding,
            tokens=tokens, steps=final["step"],
            **{f"flops_{k}": v * tokens for k, v in self.per_token._asdict().items()},
            final_train_loss=final.get("train_loss"), final_val_loss=evals[-1] if evals else None,
            final_val_bpb=bits_per_byte(evals[-1], self.bytes_per_token) if evals else None,
            final_val_loss_se=self.val_loss_se if evals else None,
            val_bytes_per_token=self.bytes_per_token,
            wall_s=time.time() - self.t_start,
            startup_s=(self.t_first_step - self.t_start) if self.t_first_step else None,
            t_worker_start=self.t_start, t_first_step=self.t_first_step,
            t_last_step=self.t_last_step if self.t_first_step else None, t_end=time.time(),
            train_time_s=self.train_time, tokens_per_s=tok_s,
            mfu=ledger.mfu(tok_s, self.per_token.exact, self.peak * self.world),
            peak_flops_per_worker=self.peak, world_size=self.world, resumed_from_step=self.resumed_from,
            pid=os.getpid(), local_param_fraction=self.local_numel / self.n_params,
            epochs=tokens / self.spec.data.n_train_tokens, n_spikes=self.watch.n_spikes,
            max_spike=self.watch.max_spike, weights=weights, cell=dict(self.spec.cell),
            model=dataclasses.asdict(self.m), deepspeed=dataclasses.asdict(self.spec.job.deepspeed),
            job=dataclasses.asdict(self.spec.job), data=self.spec.data.to_dict(),
            history=tuple(self.history))

    # ---- helpers -------------------------------------------------------------------------------

    def _to_device(self, a):
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    def _all_mean(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO ("Reporting training result ..."), one line per rank per
    report; our own progress line says the same once. Keep its warnings.

    Reaches into Ray's private modules (checked against Ray 2.60.0: ray.train.v2._internal.execution.
    context, .storage and .train_fn_utils); tests/test_ray_internals.py fails loudly if they move."""
    import logging

    from ray.train.v2._internal.execution import context, storage as ray_storage, train_fn_utils

    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # Ray names this one by file
    for module in (ray_storage, train_fn_utils):  # train_fn_utils: local mode's "Reported metrics"
        logging.getLogger(module.__name__).setLevel(logging.WARNING)


def train_time_since(history: list[dict], start_step: int) -> float:
    """Seconds of optimizer steps (evaluation and checkpointing excluded) after `start_step`."""
    return sum(r.get("step_time_s", 0.0) for r in history if r["step"] > start_step)


def numpy_rng_as_tensors() -> dict:
    """NumPy's global MT19937 state as tensors only, so that a resume reads it back with
    `torch.load(weights_only=True)` (no pickle: a file on storage can hold no code to run)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    assert name == "MT19937", name
    return {"numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos_gauss": torch.tensor([pos, has_gauss], dtype=torch.int64),
            "numpy_cached_gaussian": torch.tensor([cached], dtype=torch.float64)}


def numpy_rng_from_tensors(saved: dict) -> tuple:
    """The inverse of numpy_rng_as_tensors: a state np.random.set_state accepts."""
    pos, has_gauss = (int(v) for v in saved["numpy_pos_gauss"])
    return ("MT19937", saved["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
            float(saved["numpy_cached_gaussian"][0]))
