"""Typed configs at the boundary between Hydra and the training path.

Each component has one small dataclass that describes it (model, data, deepspeed, trainer,
resources, wandb); `TrainJobConfig` only groups them. The same dataclasses are registered in
Hydra's ConfigStore (`register_configs`) so that the YAML in `conf/` is type-checked, and
`validate_train_job` checks the cross-field rules *before* any Ray worker starts.

This module imports neither torch nor Ray: validation runs in milliseconds on the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from llm_ray import flops as flops_ledger


@dataclass
class ModelConfig:
    """Decoder-only Transformer shape (GPT-2 style)."""

    n_layer: int = 4
    """Number of Transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_head: int = 4
    """Attention heads; must divide d_model."""
    d_ff: Optional[int] = None
    """MLP hidden width; None means 4 * d_model."""
    seq_len: int = 128
    """Context length in tokens (also the learned position table size)."""
    vocab_size: int = 4096
    """Vocabulary size; the YAML ties it to data.vocab_size so the tokenizer and model agree."""
    tie_embeddings: bool = True
    """Share the token embedding with the LM head (GPT-2)."""
    bias: bool = True
    """Biases in linear layers and LayerNorms (GPT-2 has them)."""
    dropout: float = 0.0
    """Dropout probability; scaling studies train for < 1 epoch and use 0."""

    @property
    def ff_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    def shape(self) -> flops_ledger.Shape:
        """The pure-math view of this model used by the FLOPs ledger."""
        return flops_ledger.Shape(
            n_layer=self.n_layer, d_model=self.d_model, n_head=self.n_head, d_ff=self.ff_dim,
            seq_len=self.seq_len, vocab_size=self.vocab_size,
            tie_embeddings=self.tie_embeddings, bias=self.bias,
        )


@dataclass
class DataConfig:
    """Corpus -> tokenizer -> token shards."""

    sources: list = field(default_factory=lambda: ["stdlib"])
    """fsspec paths or globs of text files (local, file://, s3://, gs://, memory://).
    The word `stdlib` means this machine's Python standard-library sources (no download)."""
    exclude_tests: bool = True
    """With `stdlib`, skip test folders (they hold much generated, repetitive text)."""
    max_bytes: Optional[int] = 12_000_000
    """Stop reading documents after this many bytes (None: read everything)."""
    vocab_size: int = 4096
    """Byte-level BPE vocabulary size (HF tokenizers)."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (split by document, deterministic)."""
    token_dtype: str = "auto"
    """`uint16`, `uint32` or `auto` (uint16 when the vocabulary fits)."""
    cache_dir: Optional[str] = None
    """Where tokenizers and token shards are cached (absolute path or fsspec URL).
    None: `<trainer.storage_path>/data-cache`."""
    seed: int = 0
    """Seed of the document split."""


@dataclass
class DeepSpeedConfig:
    """Everything DeepSpeed does to the model, applied in one place (`llm_ray.engine`)."""

    zero_stage: int = 0
    """ZeRO stage 0 (DDP), 1 (optimizer states), 2 (+gradients) or 3 (+parameters)."""
    offload_optimizer: bool = False
    """Keep optimizer states on the CPU and step them with DeepSpeedCPUAdam (ZeRO >= 1)."""
    precision: str = "fp32"
    """`fp32`, `bf16`, or `fp16` (GPU only)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward (memory for compute)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""


@dataclass
class TrainerConfig:
    """Run length, optimisation and bookkeeping of one training run."""

    name: str = "train"
    """Run name (sweeps make it from coordinates, e.g. `C3e13-N1.2M`); never a timestamp."""
    num_workers: int = 2
    """Ray Train workers (data-parallel ranks)."""
    tokens: float = 2.0e6
    """Training length in tokens D, the unit a scaling study budgets."""
    global_batch_tokens: int = 8192
    """Tokens per optimizer step over all ranks (= batch sequences * seq_len)."""
    micro_batch_size: int = 16
    """Sequences per rank per forward pass; gradient accumulation makes up the rest."""
    lr: float = 3.0e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * min_lr_ratio at the end of the run."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1.0e-8
    weight_decay: float = 0.1
    seed: int = 0
    """Seed of initialisation and of the batch sampler."""
    log_every: int = 10
    """Report metrics every this many optimizer steps."""
    eval_every: int = 50
    """Validation loss every this many steps (and at step 0 and at the end)."""
    eval_tokens: int = 65536
    """Size of the fixed held-out token set evaluated each time."""
    checkpoint_every: int = 100
    """Save a ZeRO checkpoint every this many steps (and at the end); 0: only at the end."""
    num_to_keep: int = 2
    """Checkpoints kept by Ray (older ones are deleted)."""
    max_failures: int = 0
    """Worker-group restarts Ray Train may do, each resuming from the last checkpoint."""
    storage_path: Optional[str] = None
    """Absolute path, file:// or s3:// URI for checkpoints and results.
    None: `runs/` under the directory the job was launched from, made absolute."""
    peak_flops: Optional[float] = None
    """Peak FLOP/s of one worker for MFU. None: measured by a matmul at start on CPU,
    looked up from the GPU's name on CUDA."""
    fail_at_step: Optional[int] = None
    """Fault injection for tests: world rank 1 (or 0 if alone) exits abruptly at this step,
    on the first attempt only."""


@dataclass
class ResourcesConfig:
    """Where the workers run."""

    use_gpu: bool = False
    """One GPU per worker, NCCL, and bf16 on tensor cores."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker."""
    address: Optional[str] = None
    """Ray address (`auto`, `ray://...`); None starts a local cluster."""
    local_num_cpus: Optional[int] = None
    """CPUs a local cluster advertises; None: the machine's cores + 1 (the Tune trial driver
    needs a sliver of CPU besides its workers)."""


@dataclass
class WandbConfig:
    """Weights & Biases logging (world rank 0 only)."""

    mode: str = "auto"
    """`online`, `offline`, `disabled`, or `auto` (online when WANDB_API_KEY is set, else offline)."""
    project: str = "llm-ray"
    entity: Optional[str] = None
    group: Optional[str] = None
    """Run group (sweeps set it to the sweep's name)."""
    dir: Optional[str] = None
    """Absolute directory for W&B files; None: `<storage_path>/wandb`."""


@dataclass
class TrainJobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def job_from_dict(d: dict) -> TrainJobConfig:
    """Rebuild the typed config from the plain dict that travels into Ray (or comes from Hydra).
    Unknown keys are an error that names them."""
    parts = {}
    for name, f in TrainJobConfig.__dataclass_fields__.items():
        cls = f.default_factory  # each field's default_factory is its dataclass
        sub = dict(d.get(name) or {})
        unknown = set(sub) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in `{name}`: check the spelling "
                             f"against llm_ray/config.py:{cls.__name__}.")
        parts[name] = cls(**sub)
    return TrainJobConfig(**parts)


# --------------------------------------------------------------------------------------------
# Derived quantities (pure)
# --------------------------------------------------------------------------------------------

def batch_geometry(model: ModelConfig, trainer: TrainerConfig) -> tuple[int, int]:
    """(global batch in sequences, gradient accumulation steps)."""
    global_seqs = trainer.global_batch_tokens // model.seq_len
    grad_accum = global_seqs // (trainer.micro_batch_size * trainer.num_workers)
    return global_seqs, grad_accum


def total_steps(model: ModelConfig, trainer: TrainerConfig) -> int:
    """Optimizer steps = round(D / global batch tokens)."""
    return int(round(trainer.tokens / trainer.global_batch_tokens))


# --------------------------------------------------------------------------------------------
# Validation: every user error names the field and the fix, before Ray starts.
# --------------------------------------------------------------------------------------------

def is_relative_local_path(path: str) -> bool:
    return "://" not in path and not os.path.isabs(os.path.expanduser(path))


def validate_train_job(cfg: TrainJobConfig, *, cpus_available: Optional[int] = None,
                       gpus_available: Optional[int] = None) -> None:
    """Raise ValueError naming the first bad field and its fix."""
    m, d, ds, t, r = cfg.model, cfg.data, cfg.deepspeed, cfg.trainer, cfg.resources
    for name in ("n_layer", "d_model", "n_head", "seq_len", "vocab_size"):
        if getattr(m, name) <= 0:
            raise ValueError(f"model.{name}={getattr(m, name)} must be positive.")
    if m.d_model % m.n_head:
        raise ValueError(
            f"model.n_head={m.n_head} does not divide model.d_model={m.d_model}: choose n_head "
            f"among the divisors of d_model (e.g. {_divisors_near(m.d_model, m.n_head)}).")
    if m.d_ff is not None and m.d_ff <= 0:
        raise ValueError(f"model.d_ff={m.d_ff} must be positive (or null for 4*d_model).")
    if m.vocab_size != d.vocab_size:
        raise ValueError(f"model.vocab_size={m.vocab_size} differs from data.vocab_size="
                         f"{d.vocab_size}: set only data.vocab_size (the YAML links them).")
    if d.token_dtype not in ("auto", "uint16", "uint32"):
        raise ValueError(f"data.token_dtype={d.token_dtype!r}: use auto, uint16 or uint32.")
    if d.token_dtype == "uint16" and d.vocab_size > 65536:
        raise ValueError(f"data.vocab_size={d.vocab_size} does not fit data.token_dtype=uint16 "
                         f"(max 65536): set data.token_dtype=uint32 or auto.")
    if not d.sources:
        raise ValueError("data.sources is empty: give file paths/globs/URLs or `stdlib`.")
    if not 0.0 < d.val_fraction < 0.5:
        raise ValueError(f"data.val_fraction={d.val_fraction} must be in (0, 0.5).")
    if d.vocab_size < 257:
        raise ValueError(f"data.vocab_size={d.vocab_size} must be > 256 (byte-level BPE "
                         f"needs the 256 bytes plus merges).")

    if ds.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"deepspeed.zero_stage={ds.zero_stage} is out of range: use 0, 1, 2 or 3.")
    if ds.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"deepspeed.precision={ds.precision!r}: use fp32, bf16 or fp16.")
    if ds.precision == "fp16" and not r.use_gpu:
        raise ValueError("deepspeed.precision=fp16 is not supported on CPU: use "
                         "deepspeed.precision=bf16 (or fp32), or resources.use_gpu=true.")
    if ds.offload_optimizer and ds.zero_stage == 0:
        raise ValueError("deepspeed.offload_optimizer=true needs ZeRO: set deepspeed.zero_stage "
                         ">= 1 (e.g. deepspeed=offload).")
    if ds.grad_clip < 0:
        raise ValueError(f"deepspeed.grad_clip={ds.grad_clip} must be >= 0 (0 disables).")

    if t.num_workers < 1:
        raise ValueError(f"trainer.num_workers={t.num_workers} must be >= 1.")
    if t.global_batch_tokens % m.seq_len:
        raise ValueError(f"trainer.global_batch_tokens={t.global_batch_tokens} is not a multiple "
                         f"of model.seq_len={m.seq_len}: use a multiple such as "
                         f"{max(1, t.global_batch_tokens // m.seq_len) * m.seq_len}.")
    global_seqs = t.global_batch_tokens // m.seq_len
    per_step = t.micro_batch_size * t.num_workers
    if t.micro_batch_size < 1 or global_seqs % per_step:
        raise ValueError(
            f"trainer.global_batch_tokens={t.global_batch_tokens} ({global_seqs} sequences of "
            f"{m.seq_len}) is not divisible by trainer.micro_batch_size={t.micro_batch_size} x "
            f"trainer.num_workers={t.num_workers}: make the global batch a multiple of "
            f"{per_step * m.seq_len} tokens or change the micro batch.")
    if t.tokens < t.global_batch_tokens:
        raise ValueError(f"trainer.tokens={t.tokens:g} is shorter than one global batch "
                         f"(trainer.global_batch_tokens={t.global_batch_tokens}): train for more "
                         f"tokens or use a smaller batch.")
    steps = total_steps(m, t)
    if t.warmup_steps >= steps:
        raise ValueError(f"trainer.warmup_steps={t.warmup_steps} >= the run's {steps} steps: "
                         f"lower trainer.warmup_steps or raise trainer.tokens.")
    if t.lr <= 0 or not 0 <= t.min_lr_ratio <= 1:
        raise ValueError("trainer.lr must be > 0 and trainer.min_lr_ratio within [0, 1].")
    for name in ("log_every", "eval_every"):
        if getattr(t, name) < 1:
            raise ValueError(f"trainer.{name}={getattr(t, name)} must be >= 1.")
    if t.eval_tokens < m.seq_len:
        raise ValueError(f"trainer.eval_tokens={t.eval_tokens} is shorter than one sequence "
                         f"(model.seq_len={m.seq_len}).")
    if t.fail_at_step is not None and not (t.checkpoint_every and t.checkpoint_every < t.fail_at_step
                                           < steps):
        raise ValueError(f"trainer.fail_at_step={t.fail_at_step} must lie after the first checkpoint "
                         f"(trainer.checkpoint_every={t.checkpoint_every}) and before the run's end "
                         f"({steps} steps), or the injected failure cannot be resumed from.")
    if t.checkpoint_every < 0 or t.num_to_keep < 1 or t.max_failures < 0:
        raise ValueError("trainer.checkpoint_every >= 0, trainer.num_to_keep >= 1 and "
                         "trainer.max_failures >= 0 are required.")
    if t.storage_path is not None and is_relative_local_path(t.storage_path):
        raise ValueError(f"trainer.storage_path={t.storage_path!r} is relative: Ray workers run in "
                         f"other directories, so give an absolute path or a file:// / s3:// URI.")
    if d.cache_dir is not None and is_relative_local_path(d.cache_dir):
        raise ValueError(f"data.cache_dir={d.cache_dir!r} is relative: give an absolute path or "
                         f"a URI.")
    if r.use_gpu:
        if gpus_available is not None and t.num_workers > gpus_available:
            raise ValueError(f"trainer.num_workers={t.num_workers} exceeds the {gpus_available} "
                             f"GPUs available: lower trainer.num_workers.")
    elif r.address is None:
        cpus = cpus_available if cpus_available is not None else (os.cpu_count() or 1)
        need = t.num_workers * r.cpus_per_worker
        if need > cpus:
            raise ValueError(f"trainer.num_workers={t.num_workers} x resources.cpus_per_worker="
                             f"{r.cpus_per_worker} needs {need:g} CPUs but this machine has "
                             f"{cpus}: lower trainer.num_workers or resources.cpus_per_worker.")
    if cfg.wandb.mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"wandb.mode={cfg.wandb.mode!r}: use auto, online, offline or disabled.")


def _divisors_near(n: int, k: int) -> list[int]:
    divs = [x for x in range(1, n + 1) if n % x == 0]
    return sorted(divs, key=lambda x: abs(x - k))[:3]


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (group YAMLs extend them via defaults)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="deepspeed", name="deepspeed_schema", node=DeepSpeedConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="resources", name="resources_schema", node=ResourcesConfig)
    cs.store(group="wandb", name="wandb_schema", node=WandbConfig)
