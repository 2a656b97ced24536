"""Typed configs of one training run: one small dataclass per component.

Each component has one dataclass (model, data, deepspeed, trainer, resources, wandb) whose
`__post_init__` checks its own fields; `TrainJobConfig` groups them, and `validate_train_job` holds the
few rules that span components. The dataclass defaults are the only defaults: the YAML in `conf/`
holds only what differs from them (Hydra registers these classes as structured configs, so a typo
in an override fails at composition). Every user error is a `ValueError` that names the field and
the fix, raised on the driver before any Ray worker exists.

Pure: no torch, Ray, Hydra or W&B here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

from llm_ray.core import flops as flops_ledger
from llm_ray.core import schedules
from llm_ray.core.choices import check_choice
from llm_ray.core.names import check_path_name


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def is_relative_local_path(path: str) -> bool:
    return "://" not in path and not os.path.isabs(os.path.expanduser(path))


@dataclass
class ModelConfig:
    """Decoder-only Transformer: its family and shape (the FLOPs ledger reads the same fields)."""

    family: str = "gpt2"
    """`gpt2` (learned positions, LayerNorm, GELU MLP, biases) or `llama` (RMSNorm, SwiGLU, rotary
    positions, no biases: model.bias is ignored; Touvron et al. 2023). The FLOPs ledger and the
    planner's parameter counts follow it (llm_ray.core.flops)."""

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
    qk_norm: bool = False
    """`llama`: RMSNorm over each head's queries and keys before the rotary embedding (Dehghani et
    al. 2023; OLMo 2): steadier training at high learning rates."""
    rope_theta: float = 10000.0
    """`llama`: base of the rotary embedding's frequencies (Su et al. 2021, RoFormer, eq. 15)."""
    _target_: Optional[str] = None
    """Your own model: `package.module.ClassName`, a torch.nn.Module built as `ClassName(cfg)` from
    this config, returning `(logits, loss)` from `forward(idx, targets)`. Its parameters and FLOPs
    must follow model.family's ledger (checked against sum(numel) before Ray starts);
    docs/models-and-data.md has the contract. None: llm-ray's own model of model.family."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "d_model", "n_head", "seq_len", "vocab_size"):
            _require(getattr(self, name) > 0, f"model.{name}={getattr(self, name)} must be positive.")
        _require(self.d_model % self.n_head == 0,
                 f"model.n_head={self.n_head} does not divide model.d_model={self.d_model}: choose "
                 f"n_head among the divisors of d_model (e.g. {_divisors_near(self.d_model, self.n_head)}).")
        _require(self.d_ff is None or self.d_ff > 0,
                 f"model.d_ff={self.d_ff} must be positive (or null for 4*d_model).")
        _require(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must be in [0, 1).")
        check_choice("model.family", self.family, flops_ledger.FAMILIES)
        _require(not (self.qk_norm and self.family != "llama"),
                 "model.qk_norm=true needs model.family=llama (the gpt2 block has no QK-norm).")
        _require(self.rope_theta > 0, f"model.rope_theta={self.rope_theta} must be positive.")
        _require(self._target_ is None or (bool(re.fullmatch(r"[\w.]+\.\w+", self._target_))),
                 f"model._target_={self._target_!r}: give the class's import path, e.g. my_models.gpt.MyGPT.")

    @property
    def ff_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else flops_ledger.default_d_ff(self.family, self.d_model)

    def shape(self) -> flops_ledger.Shape:
        """The pure-math view of this model used by the FLOPs ledger."""
        return flops_ledger.Shape(
            n_layer=self.n_layer, d_model=self.d_model, n_head=self.n_head, d_ff=self.ff_dim,
            seq_len=self.seq_len, vocab_size=self.vocab_size,
            tie_embeddings=self.tie_embeddings, bias=self.bias and self.family == "gpt2",
            family=self.family, qk_norm=self.qk_norm,
        )


@dataclass
class DataConfig:
    """Corpus -> tokenizer -> token shards (llm_ray.data)."""

    sources: list = field(default_factory=lambda: ["stdlib"])
    """fsspec paths, globs or directories (local, file://, s3://, gs://, memory://). The format is
    told by the extension: `.parquet` (a string column), `.jsonl` / `.ndjson` / `.json` (JSON Lines:
    one object per line), each optionally `.gz` or `.zst`; anything else is text (one file = one
    document, or several with `data.delimiter`). The word `stdlib` means this machine's Python
    standard-library sources (no download)."""
    exclude_tests: bool = True
    """With `stdlib`, skip test folders (they hold much generated, repetitive text)."""
    max_bytes: Optional[int] = None
    """Cap on the corpus: files are taken in sorted order until this many bytes (as stored) are
    reached, the file crossing it kept whole; the log says what it left out. None: every file."""
    text_field: str = "text"
    """The field (JSON Lines) or column (Parquet) that holds a record's text."""
    delimiter: Optional[str] = None
    """A regular expression splitting text files into documents (e.g. `\\n\\s*\\n` for blank
    lines, for a book or a dump in one file). None: each text file is one document."""
    large_file_bytes: Optional[int] = 1_000_000
    """A text file larger than this, read without data.delimiter, is cut into documents of about
    data.document_bytes: at the first blank line after that many characters or, in a stretch with
    none, at twice that (a fixed-size piece). The only file of a corpus of one text file is cut
    whatever its size, into at least 16 documents, so it can be split into train and val. The log
    says so in one line. None: every text file is one document."""
    document_bytes: int = 65_536
    """Size of the documents a large text file is cut into (see data.large_file_bytes): the unit
    the train/val split holds out (a 5 MB novel gives ~80 documents, ~4 of them held out)."""
    invalid_utf8: str = "error"
    """Bytes that are not UTF-8: `error` (stop, naming the file and the offset) or `replace`
    (with U+FFFD). The `stdlib` corpus always replaces: its test folders hold deliberately
    mis-encoded files."""
    vocab_size: int = 4096
    """Byte-level BPE vocabulary size (HF tokenizers). With data.tokenizer, the file's vocabulary
    is used instead (and the model is sized by it)."""
    tokenizer: Optional[str] = None
    """A `tokenizer.json` of your own (HF `tokenizers` format: GPT-2's, Llama 3's, one you trained),
    as a path or fsspec URL; nothing is downloaded. None: a byte-level BPE of data.vocab_size is
    trained on the corpus (the default). <|endoftext|> is added when the file has no such token."""
    tokenizer_sample_bytes: int = 64_000_000
    """The BPE is trained on at most this many bytes of train documents: the first train documents
    of every piece (`task_bytes`), an equal share each, so the same sample on every run and the
    driver's memory bounded. A corpus smaller than this is used whole."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (split by document, deterministic)."""
    token_dtype: str = "auto"
    """`uint16`, `uint32` or `auto` (uint16 when the vocabulary fits)."""
    task_bytes: int = 16_000_000
    """Bytes (as stored) per preparation task: consecutive files are grouped into pieces of about
    this size, each read, split and encoded by one task; a larger file is a piece of its own."""
    shard_tokens: int = 16_777_216
    """Tokens per shard file (2**24: 32 MiB of uint16); a piece's last shard of a split is shorter."""
    ray_min_bytes: int = 64_000_000
    """Corpora at least this large (bytes as stored) are prepared by Ray Data tasks across the
    cluster; smaller ones in the driver process by the same code, without Ray Data's start-up.
    The shards are identical either way. 0: always Ray Data."""
    cache_dir: Optional[str] = None
    """Where tokenizers and token shards are cached (absolute path or fsspec URL).
    None: `<trainer.storage_path>/data-cache`."""
    seed: int = 0
    """Seed of the document split."""
    dedup_lines: bool = False
    """Keep every line of >= 30 characters only where it first occurs in the corpus (files in sorted
    order), before the tokenizer and the split see the text: exact line-level deduplication (Lee et al.
    2022). For corpora of similar documents, whose repeated lines across the train/val split make
    forecasts over-predict (the report warns from 25% overlap; docs/data.md)."""

    def __post_init__(self) -> None:
        _require(bool(self.sources), "data.sources is empty: give file paths/globs/URLs or `stdlib`.")
        _require(self.token_dtype in ("auto", "uint16", "uint32"),
                 f"data.token_dtype={self.token_dtype!r}: use auto, uint16 or uint32.")
        _require(self.vocab_size >= 257, f"data.vocab_size={self.vocab_size} must be > 256 (byte-level "
                                         f"BPE needs the 256 bytes plus <|endoftext|> plus merges).")
        _require(not (self.token_dtype == "uint16" and self.vocab_size > 65536),
                 f"data.vocab_size={self.vocab_size} does not fit data.token_dtype=uint16 (max 65536): "
                 f"set data.token_dtype=uint32 or auto.")
        _require(0.0 < self.val_fraction < 0.5,
                 f"data.val_fraction={self.val_fraction} must be in (0, 0.5).")
        _require(self.max_bytes is None or self.max_bytes > 0,
                 f"data.max_bytes={self.max_bytes} must be positive (or null for all).")
        _require(bool(self.text_field), "data.text_field is empty: name the field/column holding the text.")
        _require(self.invalid_utf8 in ("error", "replace"),
                 f"data.invalid_utf8={self.invalid_utf8!r}: use error or replace.")
        _require(self.large_file_bytes is None or self.large_file_bytes > 0,
                 f"data.large_file_bytes={self.large_file_bytes} must be positive (or null: one document per file).")
        for name in ("tokenizer_sample_bytes", "task_bytes", "shard_tokens", "document_bytes"):
            _require(getattr(self, name) > 0, f"data.{name}={getattr(self, name)} must be positive.")
        _require(self.ray_min_bytes >= 0, f"data.ray_min_bytes={self.ray_min_bytes} must be >= 0.")
        _check_delimiter(self.delimiter)
        _require(self.cache_dir is None or not is_relative_local_path(self.cache_dir),
                 f"data.cache_dir={self.cache_dir!r} is relative: give an absolute path or a URI.")


def _check_delimiter(delimiter: Optional[str]) -> None:
    if delimiter is None:
        return
    try:
        pattern = re.compile(delimiter)
    except re.error as err:
        raise ValueError(f"data.delimiter={delimiter!r} is not a regular expression ({err}).") from None
    _require(delimiter != "" and pattern.match("") is None,
             f"data.delimiter={delimiter!r} matches the empty string: give a pattern that needs at "
             f"least one character, e.g. '\\n\\s*\\n' (blank lines).")
    _require(pattern.groups == 0,
             f"data.delimiter={delimiter!r} has a capturing group: write (?:...) instead.")


@dataclass
class DeepSpeedConfig:
    """Everything DeepSpeed does to the model, applied in one place (`llm_ray.training.engine`)."""

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
    compile: bool = False
    """torch.compile the model through DeepSpeed's `engine.compile()` (inductor): faster steps on
    GPUs after a compilation of tens of seconds at the first step."""

    def __post_init__(self) -> None:
        _require(self.zero_stage in (0, 1, 2, 3),
                 f"deepspeed.zero_stage={self.zero_stage} is out of range: use 0, 1, 2 or 3.")
        _require(self.precision in ("fp32", "bf16", "fp16"),
                 f"deepspeed.precision={self.precision!r}: use fp32, bf16 or fp16.")
        _require(not (self.offload_optimizer and self.zero_stage == 0),
                 "deepspeed.offload_optimizer=true needs ZeRO: set deepspeed.zero_stage >= 1 "
                 "(e.g. deepspeed=offload).")
        _require(self.grad_clip >= 0, f"deepspeed.grad_clip={self.grad_clip} must be >= 0 (0 disables).")


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
    schedule: str = "cosine"
    """`cosine` (warm-up, then cosine to lr * min_lr_ratio) or `wsd` (warm-up, constant lr, then a
    cooldown over the last cooldown_fraction of the steps): llm_ray.core.schedules."""
    cooldown_fraction: float = 0.2
    """`wsd`: the cooldown's share of the run's steps (Hägele et al. 2024, arXiv 2405.18392, Sec. 3:
    ~20% matches a tuned cosine)."""
    cooldown_shape: str = "1-sqrt"
    """`wsd`: `1-sqrt` or `linear` (Hägele et al. 2024, Sec. 3.1: 1-sqrt beats linear)."""
    cooldown_min_lr_ratio: float = 0.0
    """`wsd`: the cooldown ends at lr * this (Hägele et al. cool down to zero)."""
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
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
    divergence_patience: float = 0.05
    """Divergence rule (llm_ray.core.divergence): a run stops as `diverged` when its loss is not
    finite, or when after warm-up its smoothed loss stays above its initial value for this fraction
    of the run's steps (at least 20 steps)."""
    spike_nats: float = 0.5
    """A step whose loss jumps this many nats above the moving average is counted as a spike
    (result.json: n_spikes); the run goes on."""
    save_weights: bool = True
    """Write the final weights (fp32 state dict, weights.pt) beside result.json, for the stages that
    evaluate trained models without retraining them (validation, downstream, compression)."""
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

    def __post_init__(self) -> None:
        check_path_name("trainer.name", self.name)
        for name in ("num_workers", "micro_batch_size", "log_every", "eval_every"):
            _require(getattr(self, name) >= 1, f"trainer.{name}={getattr(self, name)} must be >= 1.")
        _require(self.tokens > 0, f"trainer.tokens={self.tokens} must be positive.")
        _require(self.lr > 0 and 0 <= self.min_lr_ratio <= 1,
                 "trainer.lr must be > 0 and trainer.min_lr_ratio within [0, 1].")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                 f"trainer.betas={list(self.betas)}: give [beta1, beta2], each in [0, 1).")
        _require(self.warmup_steps >= 0, f"trainer.warmup_steps={self.warmup_steps} must be >= 0.")
        check_choice("trainer.schedule", self.schedule, schedules.SCHEDULES)
        check_choice("trainer.cooldown_shape", self.cooldown_shape, schedules.COOLDOWN_SHAPES)
        _require(0 <= self.cooldown_fraction < 1 and 0 <= self.cooldown_min_lr_ratio <= 1,
                 f"trainer.cooldown_fraction={self.cooldown_fraction} must be in [0, 1) and "
                 f"trainer.cooldown_min_lr_ratio={self.cooldown_min_lr_ratio} in [0, 1].")
        _require(0 < self.divergence_patience <= 1,
                 f"trainer.divergence_patience={self.divergence_patience} must be a fraction of the run in (0, 1].")
        _require(self.spike_nats > 0, f"trainer.spike_nats={self.spike_nats} must be positive.")
        _require(self.checkpoint_every >= 0 and self.num_to_keep >= 1 and self.max_failures >= 0,
                 "trainer.checkpoint_every >= 0, trainer.num_to_keep >= 1 and trainer.max_failures >= 0 "
                 "are required.")
        _require(self.storage_path is None or not is_relative_local_path(self.storage_path),
                 f"trainer.storage_path={self.storage_path!r} is relative: Ray workers run in other "
                 f"directories, so give an absolute path or a file:// / s3:// URI.")


@dataclass
class ResourcesConfig:
    """Where the workers run."""

    use_gpu: bool = False
    """One GPU per worker, NCCL, and bf16 on tensor cores."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker."""
    address: Optional[str] = None
    """Ray cluster to join (`auto`, `HOST:PORT`, `ray://...`); None: RAY_ADDRESS's, as Ray does (a Ray
    job sets it), else a new local cluster; `local`: a new local cluster even when RAY_ADDRESS is set."""
    local_num_cpus: Optional[int] = None
    """CPUs a local cluster advertises; None: the machine's cores + 1 (the Tune trial driver
    needs a sliver of CPU besides its workers)."""

    def __post_init__(self) -> None:
        _require(self.cpus_per_worker > 0,
                 f"resources.cpus_per_worker={self.cpus_per_worker} must be positive.")

    def cluster_address(self) -> Optional[str]:
        """The cluster the driver joins, by Ray's convention (`ray.init()` reads RAY_ADDRESS, which
        `ray job submit` sets for its driver); None: the driver starts a local cluster."""
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        return None if address == "local" else address


WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class WandbConfig:
    """Weights & Biases logging (world rank 0 only)."""

    mode: str = "auto"
    """`online`, `offline`, `disabled`, or `auto`: W&B's WANDB_MODE, else online when WANDB_API_KEY
    is set and offline otherwise. An online run that cannot reach W&B logs offline (io/tracking.py)."""
    project: Optional[str] = None
    """None: WANDB_PROJECT, else `llm-ray`."""
    entity: Optional[str] = None
    """None: WANDB_ENTITY, else the API key's default entity."""
    group: Optional[str] = None
    """Run group (sweeps set it to the sweep's name)."""
    dir: Optional[str] = None
    """Absolute directory for W&B files; None: WANDB_DIR, else `<storage_path>/wandb` (local storage)."""

    def __post_init__(self) -> None:
        _require(self.mode in WANDB_MODES,
                 f"wandb.mode={self.mode!r}: use auto, online, offline or disabled.")


@dataclass
class TrainJobConfig:
    """One training run: the components, each validated on its own; `validate_train_job` adds the rest."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


COMPONENTS = tuple(TrainJobConfig.__dataclass_fields__)
"""The job's component names, which are also its Hydra config groups."""


def job_from_record(d: dict) -> TrainJobConfig:
    """The inverse of dataclasses.asdict for a job llm-ray wrote itself (RunRecord.job): each
    component rebuilt, and validated, from its own fields. User input goes through Hydra/OmegaConf
    (llm_ray.cli), which type-checks and names unknown keys."""
    return TrainJobConfig(**{name: TrainJobConfig.__dataclass_fields__[name].default_factory(**d[name])
                             for name in COMPONENTS})


# --------------------------------------------------------------------------------------------
# Derived quantities (pure)
# --------------------------------------------------------------------------------------------

def batch_geometry(model: ModelConfig, trainer: TrainerConfig) -> tuple[int, int]:
    """(global batch in sequences, gradient accumulation steps)."""
    global_seqs = trainer.global_batch_tokens // model.seq_len
    grad_accum = global_seqs // (trainer.micro_batch_size * trainer.num_workers)
    return global_seqs, grad_accum


def total_steps(trainer: TrainerConfig) -> int:
    """Optimizer steps = round(D / global batch tokens)."""
    return int(round(trainer.tokens / trainer.global_batch_tokens))


# --------------------------------------------------------------------------------------------
# Rules that span components
# --------------------------------------------------------------------------------------------

def validate_train_job(cfg: TrainJobConfig, *, cpus_available: Optional[int] = None,
                 gpus_available: Optional[int] = None) -> None:
    """The cross-component rules (each component checked its own fields when it was built)."""
    _require(cfg.model.vocab_size == cfg.data.vocab_size,
             f"model.vocab_size={cfg.model.vocab_size} differs from data.vocab_size={cfg.data.vocab_size}: "
             f"set only data.vocab_size (the YAML links them).")
    _require(not (cfg.deepspeed.precision == "fp16" and not cfg.resources.use_gpu),
             "deepspeed.precision=fp16 is not supported on CPU: use deepspeed.precision=bf16 (or fp32), "
             "or resources.use_gpu=true.")
    _check_batch(cfg.model, cfg.trainer)
    _check_schedule(cfg.model, cfg.trainer)
    _check_placement(cfg.trainer, cfg.resources, cpus_available, gpus_available)


def _check_batch(m: ModelConfig, t: TrainerConfig) -> None:
    _require(t.global_batch_tokens % m.seq_len == 0,
             f"trainer.global_batch_tokens={t.global_batch_tokens} is not a multiple of model.seq_len="
             f"{m.seq_len}: use a multiple such as {max(1, t.global_batch_tokens // m.seq_len) * m.seq_len}.")
    global_seqs = t.global_batch_tokens // m.seq_len
    per_step = t.micro_batch_size * t.num_workers
    _require(global_seqs % per_step == 0,
             f"trainer.global_batch_tokens={t.global_batch_tokens} ({global_seqs} sequences of {m.seq_len}) "
             f"is not divisible by trainer.micro_batch_size={t.micro_batch_size} x trainer.num_workers="
             f"{t.num_workers}: make the global batch a multiple of {per_step * m.seq_len} tokens or "
             f"change the micro batch.")
    _require(t.tokens >= t.global_batch_tokens,
             f"trainer.tokens={t.tokens:g} is shorter than one global batch (trainer.global_batch_tokens="
             f"{t.global_batch_tokens}): train for more tokens or use a smaller batch.")
    _require(t.eval_tokens >= m.seq_len,
             f"trainer.eval_tokens={t.eval_tokens} is shorter than one sequence (model.seq_len={m.seq_len}).")


def _check_schedule(m: ModelConfig, t: TrainerConfig) -> None:
    steps = total_steps(t)
    _require(t.warmup_steps < steps, f"trainer.warmup_steps={t.warmup_steps} >= the run's {steps} steps: "
                                     f"lower trainer.warmup_steps or raise trainer.tokens.")
    start = schedules.cooldown_start(steps, t.cooldown_fraction)
    _require(t.schedule != "wsd" or max(1, t.warmup_steps) <= start,
             f"trainer.warmup_steps={t.warmup_steps} ends after the WSD cooldown starts (step {start} of {steps}, "
             f"trainer.cooldown_fraction={t.cooldown_fraction}): lower trainer.warmup_steps or "
             f"trainer.cooldown_fraction, or raise trainer.tokens.")
    _require(t.fail_at_step is None or bool(t.checkpoint_every and t.checkpoint_every < t.fail_at_step < steps),
             f"trainer.fail_at_step={t.fail_at_step} must lie after the first checkpoint "
             f"(trainer.checkpoint_every={t.checkpoint_every}) and before the run's end ({steps} steps), "
             f"or the injected failure cannot be resumed from.")


def _check_placement(t: TrainerConfig, r: ResourcesConfig, cpus_available: Optional[int],
                     gpus_available: Optional[int]) -> None:
    if r.use_gpu:
        _require(gpus_available is None or t.num_workers <= gpus_available,
                 f"trainer.num_workers={t.num_workers} exceeds the {gpus_available} GPUs available: "
                 f"lower trainer.num_workers.")
        return
    if r.cluster_address() is not None:
        return  # a cluster's CPUs are the cluster's to count
    cpus = cpus_available if cpus_available is not None else (os.cpu_count() or 1)
    need = t.num_workers * r.cpus_per_worker
    _require(need <= cpus, f"trainer.num_workers={t.num_workers} x resources.cpus_per_worker="
                           f"{r.cpus_per_worker} needs {need:g} CPUs but this machine has {cpus}: lower "
                           f"trainer.num_workers or resources.cpus_per_worker.")


def _divisors_near(n: int, k: int) -> list[int]:
    divs = [x for x in range(1, n + 1) if n % x == 0]
    return sorted(divs, key=lambda x: abs(x - k))[:3]
