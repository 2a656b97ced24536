"""Everything DeepSpeed, in one place: the JSON config, the engine, checkpoints.

The model (`llm_ray.training.model`) is single-device code; here it gets ZeRO sharding, precision,
optimizer offload, activation checkpointing, gradient accumulation and clipping, and the LR
schedule, all from `DeepSpeedConfig` + `TrainerConfig` rendered into DeepSpeed's own JSON config.
The one schedule DeepSpeed's config lacks, WSD, is handed to `deepspeed.initialize` as a client
LR scheduler (DeepSpeed's idiom for a custom schedule); its math is llm_ray.core.schedules.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from llm_ray.core.config import DeepSpeedConfig, ModelConfig, TrainerConfig, batch_geometry, total_steps
from llm_ray.core.schedules import WARMUP_MIN_RATIO, wsd_factor

CKPT_TAG = "ds"  # one DeepSpeed tag per Ray checkpoint directory


def use_venv_ops_cache() -> str:
    """Point torch's JIT-extension cache at this environment's own folder (<venv>/torch_extensions).

    DeepSpeed's CPU ops are compiled against this environment's torch and DeepSpeed paths. A cache
    shared between environments (the default ~/.cache/torch_extensions) makes each one rebuild the
    ops the other built (60-130 s of gcc in a worker's start-up); a per-environment cache is built
    once by `make setup` (llm_ray.prebuild) and reused by every process, Ray workers included.
    """
    import sys

    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


@contextlib.contextmanager
def same_ops_build():
    """While DeepSpeed JIT-loads an op, pin OMP_NUM_THREADS=1 (restored afterwards).

    The op's build fingerprint changes with OMP_NUM_THREADS, which Ray sets per worker to its CPU
    count: without the pin, `make setup`'s build and each worker's differ and every worker start
    recompiles (seen: 60-80 s per start). Threads at run time are set by torch.set_num_threads and
    by the OpenMP runtime, which read the environment long before this point.
    """
    use_venv_ops_cache()
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def deepspeed_json(ds: DeepSpeedConfig, trainer: TrainerConfig, model: ModelConfig) -> dict:
    """DeepSpeed's config dict (https://www.deepspeed.ai/docs/config-json/) for this run."""
    global_seqs, grad_accum = batch_geometry(model, trainer)
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if ds.zero_stage == 3:
        # Gather parameters for checkpoints from the shards (consolidation not needed: every rank
        # saves and reloads its own shard).
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return {
        "train_batch_size": global_seqs,
        "train_micro_batch_size_per_gpu": trainer.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": ds.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16", "initial_scale_power": 16},
        **({"scheduler": cosine_scheduler(trainer)} if trainer.schedule == "cosine" else {}),
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def cosine_scheduler(trainer: TrainerConfig) -> dict:
    """Linear warm-up from 1% of lr to lr, then cosine to lr * min_lr_ratio over the run's own steps
    (a scaling study needs each run's schedule to span its own D: Hoffmann et al. 2022, Fig. A1)."""
    return {"type": "WarmupCosineLR",
            "params": {"total_num_steps": total_steps(trainer), "warmup_num_steps": max(1, trainer.warmup_steps),
                       "warmup_min_ratio": WARMUP_MIN_RATIO, "warmup_type": "linear",
                       "cos_min_ratio": trainer.min_lr_ratio}}


def client_lr_scheduler(trainer: TrainerConfig):
    """For trainer.schedule=wsd, what `deepspeed.initialize(lr_scheduler=...)` takes: a callable that
    DeepSpeed calls with its optimizer, returning a torch LambdaLR over `wsd_factor` (None for
    cosine, which DeepSpeed builds from the JSON config).

    The factor is a plain function, so LambdaLR's state_dict keeps only the step count: a branch
    loading its trunk's checkpoint takes the trunk's step and keeps its own cooldown."""
    if trainer.schedule != "wsd":
        return None
    import torch

    steps = total_steps(trainer)

    def factor(step: int) -> float:
        return wsd_factor(step, total_steps=steps, warmup_steps=trainer.warmup_steps,
                          cooldown_fraction=trainer.cooldown_fraction, cooldown_shape=trainer.cooldown_shape,
                          final_ratio=trainer.cooldown_min_lr_ratio)

    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases and LayerNorm gains are not decayed (GPT-2/nanoGPT practice)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model, ds: DeepSpeedConfig, trainer: TrainerConfig, mcfg: ModelConfig):
    """Wrap `model` in a DeepSpeed engine that reuses the process group Ray Train created."""
    import deepspeed
    import torch

    model.checkpoint_activations = ds.activation_checkpointing
    groups = param_groups(model, trainer.weight_decay)
    hp = dict(lr=trainer.lr, betas=tuple(trainer.betas), eps=trainer.eps)
    if ds.offload_optimizer:
        # ZeRO-Offload steps the optimizer on the CPU with DeepSpeed's vectorised Adam.
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        with same_ops_build():
            optimizer = DeepSpeedCPUAdam(groups, adamw_mode=True, **hp)
    else:
        # The fused kernel (CUDA, and on CPU since torch 2.4) updates all parameters in one pass:
        # 1.07-1.21x per step on the sweep's smallest cells (bench/bench_step_options.py).
        optimizer = torch.optim.AdamW(groups, fused=True, **hp)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_json(ds, trainer, mcfg),
        lr_scheduler=client_lr_scheduler(trainer), dist_init_required=False)
    if ds.compile:
        engine.compile()  # torch.compile through DeepSpeed (inductor), compiled at the first step
    return engine, scheduler


def init_distributed(use_gpu: bool) -> None:
    """Ray Train already created the torch process group (gloo on CPU, NCCL on GPU; in local mode
    from the torchrun variables build_trainer sets); DeepSpeed adopts it instead of creating its own."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with same_ops_build():
        import deepspeed

        forget_earlier_process_group()
        deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def forget_earlier_process_group() -> None:
    """Drop the process group DeepSpeed cached, at module level, from an earlier run in this process.

    A sweep reuses its trial processes (Tune's reuse_actors): an in-process cell gets a new process
    group from Ray, and DeepSpeed's cached backend (deepspeed.comm.comm.cdb) and groups
    (deepspeed.utils.groups) would still name the last cell's destroyed one ("Group ... is not
    registered"). In a fresh process they are empty already. Private names, checked against
    DeepSpeed 0.19.8; tests/test_ray_internals.py fails loudly if they move."""
    import deepspeed.comm.comm as ds_comm
    from deepspeed.utils import groups

    ds_comm.cdb = None
    for name in DEEPSPEED_GROUP_CACHES:
        value = getattr(groups, name)
        setattr(groups, name, {} if isinstance(value, dict) else None)


# deepspeed.utils.groups' module-level caches of process groups (dicts: per expert-parallel size).
DEEPSPEED_GROUP_CACHES = ("_WORLD_GROUP", "_DATA_PARALLEL_GROUP", "_ZERO_PARAM_INTRA_PARALLEL_GROUP", "mpu",
                          "mesh_device", "_EXPERT_PARALLEL_GROUP", "_EXPERT_PARALLEL_GROUP_RANKS",
                          "_EXPERT_DATA_PARALLEL_GROUP", "_EXPERT_DATA_PARALLEL_GROUP_RANKS", "_ALL_TO_ALL_GROUP",
                          "_TENSOR_MODEL_PARALLEL_GROUP", "_MODEL_PARALLEL_GROUP")


def release_process_group() -> None:
    """Destroy this process's torch process group if a run left one (an in-process cell that failed
    before Ray's local mode tore it down), so the next cell in the process can make its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def save(engine, directory: str, client_state: dict) -> None:
    """Every rank writes its own ZeRO shard (and rank 0 the module states) into `directory`."""
    engine.save_checkpoint(directory, tag=CKPT_TAG, client_state=client_state)


def load(engine, directory: str) -> dict:
    """Restore weights, optimizer, LR schedule; return the client state saved with them.

    Trust: DeepSpeed reads its checkpoint files with `torch.load(weights_only=False)` (its
    TorchCheckpointEngine; the optimizer and engine state hold Python objects), i.e. unpickles them.
    So a checkpoint is loaded only from this sweep's own storage (Ray's checkpoint of this run, or a
    branch point under the sweep's trunk directory), never from a path a user or another sweep names:
    whoever can write to that storage can run code on the workers, so grant write access to it as
    you would to the cluster itself (docs/security.md)."""
    import torch

    _, client_state = engine.load_checkpoint(
        directory, tag=CKPT_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
    if client_state is None:
        raise RuntimeError(f"no DeepSpeed checkpoint with tag {CKPT_TAG!r} in {directory}")
    sched = engine.lr_scheduler
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        # The optimizer came back with the lr the checkpoint's run had set for its next step; this
        # run's own schedule sets it instead (a branch's cooldown is its own, not its trunk's).
        sched.last_epoch -= 1
        sched.step()
    return client_state


def full_state_dict(engine) -> dict:
    """The model's whole state dict in fp32 on the CPU, on every rank (all ranks must call it: under
    ZeRO-3 the parameters are gathered from their shards first). Tied tensors stay tied."""
    import deepspeed

    params = list(engine.module.parameters())
    gather = (deepspeed.zero.GatheredParameters(params, modifier_rank=None)
              if engine.zero_optimization_stage() == 3 else contextlib.nullcontext())
    with gather:
        copies: dict = {}
        return {k: copies.setdefault(v.data_ptr(), v.detach().float().cpu().clone())
                for k, v in engine.module.state_dict().items()}


def grad_norm_before_step(engine) -> float | None:
    """The global L2 norm of the (averaged) gradients, read before engine.step() at the accumulation
    boundary. DeepSpeed keeps this number only inside its ZeRO and bf16 optimizers
    (engine.get_global_grad_norm() is None for ZeRO-0 in fp32, where it clips but discards it), so
    for that path it is computed here; elsewhere None (read DeepSpeed's after the step)."""
    import torch

    if engine.zero_optimization() or engine.bfloat16_enabled() or engine.fp16_enabled():
        return None
    grads = [p.grad.detach().float() for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
