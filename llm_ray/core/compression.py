"""Compression settings and the bytes ledger: what a trained model weighs at each precision or sparsity,
and which model is best for a memory budget. Pure: no torch (the operations themselves are
`llm_ray.compression`, which follows the target selection and storage formats defined here).

What is compressed (the *targets*): every Linear weight matrix (attention QKV and output projection,
MLP in and out) and, with `compress.embedding=true`, the token and position embedding tables. With a
tied LM head (GPT-2) the head IS the token embedding, stored once: it is compressed exactly when the
embedding is. LayerNorm parameters and biases stay fp32 (they are < 3% of N here and every
published PTQ recipe keeps them).

Storage formats the ledger counts (bytes are exact integers, tested against the real model):
- fp32: 4 bytes per parameter.
- round-to-nearest, symmetric, b bits (`rtn_channel`: one scale per output row; `rtn_group`: one
  scale per group of `group_size` consecutive weights along a row's input dimension): the integer
  codes bit-packed, ceil(numel * b / 8) bytes per tensor, plus one fp16 scale (2 bytes) per group,
  as GPTQ/AWQ store them (Dettmers & Zettlemoyer 2022 count 16-bit block constants the same way).
- magnitude pruning (`prune_global`, `prune_layer`: unstructured; `prune_2_4`: 2 of every 4
  consecutive weights along the input dimension): the kept values in fp32 plus one bit per weight
  (an unstructured bitmask, or for 2:4 the 2-bit position of each kept value: numel / 2 x 2 bits,
  the same count): 4 * nnz + ceil(numel / 8) bytes per tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

from llm_ray.core.flops import Shape

QUANT_METHODS = ("rtn_channel", "rtn_group")
PRUNE_METHODS = ("prune_global", "prune_layer", "prune_2_4")
METHODS = QUANT_METHODS + PRUNE_METHODS
BASELINE = "fp32"
"""The uncompressed model: every cell's reference row (delta_loss = 0)."""
FP32_BYTES = 4
SCALE_BYTES = 2
"""One fp16 scale per quantization group."""
MIN_BITS, MAX_BITS = 2, 8


@dataclass
class CompressConfig:
    """Which compressions `python -m llm_ray.compress` applies to every finished cell of a sweep, and
    how the results are fitted and reported (conf/compress/default.yaml)."""

    methods: list = field(default_factory=lambda: list(METHODS))
    """Any of rtn_channel (round-to-nearest, one scale per output channel), rtn_group (one scale per
    group of group_size weights), prune_global (magnitude pruning, one threshold over all targets),
    prune_layer (one threshold per tensor), prune_2_4 (2:4 semi-structured)."""
    channel_bits: list = field(default_factory=lambda: [8])
    """Bit widths for rtn_channel (each in 2..8)."""
    group_bits: list = field(default_factory=lambda: [4, 3])
    """Bit widths for rtn_group (each in 2..8): 4 and 3 test Dettmers & Zettlemoyer's finding that
    4-bit is the best use of a fixed number of model bits."""
    group_size: int = 8
    """Weights per scale for rtn_group; must divide every target's input width (d_model, d_ff). The
    default sweep's widths are multiples of 8 (sweep.head_dim=8); for models of GPT-2 size and up,
    64-128 is the published sweet spot (Dettmers & Zettlemoyer 2022)."""
    sparsities: list = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """Fractions of target weights zeroed by prune_global and prune_layer, each in (0, 1)."""
    embedding: bool = True
    """Also quantize / prune the token and position embeddings (with a tied head: the head too)."""
    memory_budgets: Optional[list] = None
    """Model sizes in bytes the report answers for; None: a 1-2-5 ladder over the sizes measured."""
    min_delta: float = 1.0e-4
    """Loss increases at or below this (nats) are not fitted by the (log-space) degradation laws: a
    positive power law cannot describe a change that is zero or negative."""
    n_bootstrap: int = 200
    """Bootstrap resamples over cells for the degradation laws' intervals."""
    ci_level: float = 0.9
    seed: int = 0
    max_concurrent: Optional[int] = None
    """Evaluations (Ray tasks of 1 CPU each) at once; None: as many as the cluster's CPUs."""
    plots: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"compress.methods={list(self.methods)}: unknown method(s) {unknown or '(none given)'}; "
                             f"choose among {list(METHODS)}.")
        for name in ("channel_bits", "group_bits"):
            bad = [b for b in getattr(self, name) if int(b) != b or not MIN_BITS <= int(b) <= MAX_BITS]
            if bad:
                raise ValueError(f"compress.{name}={list(getattr(self, name))}: bit widths must be integers in "
                                 f"{{{MIN_BITS}..{MAX_BITS}}} ({bad} are not); fp32 is always measured as the baseline.")
        bad = [s for s in self.sparsities if not 0.0 < float(s) < 1.0]
        if bad:
            raise ValueError(f"compress.sparsities={list(self.sparsities)}: each must lie in (0, 1), e.g. 0.5 for "
                             f"half the weights pruned ({bad} do not).")
        if self.group_size < 1:
            raise ValueError(f"compress.group_size={self.group_size} must be a positive integer, e.g. 8 or 64.")
        if any(float(b) <= 0 for b in self.memory_budgets or ()):
            raise ValueError(f"compress.memory_budgets={list(self.memory_budgets)}: give positive sizes in bytes.")
        if not 0 < self.ci_level < 1 or self.n_bootstrap < 0 or self.min_delta < 0:
            raise ValueError("compress.ci_level must be in (0, 1), compress.n_bootstrap and compress.min_delta >= 0.")


@dataclass(frozen=True)
class Setting:
    """One way to compress a model: a method and its parameters."""

    method: str
    bits: int = 32
    group_size: Optional[int] = None
    """rtn_group's group; None elsewhere (rtn_channel: one group per output row)."""
    sparsity: float = 0.0
    embedding: bool = True

    @property
    def setting_id(self) -> str:
        """A file-name-safe key: `rtn_group-b4-g8`, `prune_global-s0.5`, `... -noemb`."""
        if self.method == BASELINE:
            return BASELINE
        parts = [self.method]
        if self.method in QUANT_METHODS:
            parts.append(f"b{self.bits}")
        if self.group_size:
            parts.append(f"g{self.group_size}")
        if self.method in ("prune_global", "prune_layer"):
            parts.append(f"s{self.sparsity:g}")
        return "-".join(parts + ([] if self.embedding else ["noemb"]))

    @property
    def precision(self) -> str:
        """`fp32`, `int8`, `int4`, ...: the frontier a setting belongs to."""
        return BASELINE if self.bits == 32 else f"int{self.bits}"

    @property
    def label(self) -> str:
        """How a person reads it: `int4 g8`, `int8 per-channel`, `global 50%`, `2:4`."""
        scope = "" if self.embedding or self.method == BASELINE else " (no emb)"
        text = {BASELINE: "fp32", "rtn_channel": f"{self.precision} per-channel",
                "rtn_group": f"{self.precision} g{self.group_size}", "prune_global": f"global {self.sparsity:.0%}",
                "prune_layer": f"per-layer {self.sparsity:.0%}", "prune_2_4": "2:4"}[self.method]
        return text + scope


def settings(cfg: CompressConfig) -> list[Setting]:
    """The fp32 baseline, then every configured setting, in config order (duplicates once)."""
    out = [Setting(BASELINE)]
    e = cfg.embedding
    for method in cfg.methods:
        if method == "rtn_channel":
            out += [Setting(method, bits=int(b), embedding=e) for b in cfg.channel_bits]
        elif method == "rtn_group":
            out += [Setting(method, bits=int(b), group_size=cfg.group_size, embedding=e) for b in cfg.group_bits]
        elif method == "prune_2_4":
            out.append(Setting(method, sparsity=0.5, embedding=e))
        else:
            out += [Setting(method, sparsity=float(s), embedding=e) for s in cfg.sparsities]
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------
# The bytes ledger
# --------------------------------------------------------------------------------------------


class Tensor(NamedTuple):
    """One parameter tensor of the model, named as `Transformer.named_parameters()` names it."""

    name: str
    shape: tuple
    kind: str
    """`linear` (a Linear weight), `embedding` (wte, wpe; with a tied head, wte is the head too), or
    `other` (LayerNorm parameters, biases)."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def tensors(s: Shape) -> list[Tensor]:
    """Every parameter tensor of llm_ray.training.model.Transformer of this shape (the tied head once)."""
    d, f, a = s.d_model, s.d_ff, s.d_attn
    out = [Tensor("wte.weight", (s.vocab_size, d), "embedding"), Tensor("wpe.weight", (s.seq_len, d), "embedding")]

    def norm(prefix):
        return [Tensor(f"{prefix}.weight", (d,), "other")] + ([Tensor(f"{prefix}.bias", (d,), "other")] if s.bias else [])

    def linear(prefix, n_out, n_in):
        return [Tensor(f"{prefix}.weight", (n_out, n_in), "linear")] + (
            [Tensor(f"{prefix}.bias", (n_out,), "other")] if s.bias else [])

    for i in range(s.n_layer):
        p = f"blocks.{i}"
        out += norm(f"{p}.ln1") + linear(f"{p}.attn.qkv", 3 * a, d) + linear(f"{p}.attn.proj", d, a)
        out += norm(f"{p}.ln2") + linear(f"{p}.mlp.fc", f, d) + linear(f"{p}.mlp.proj", d, f)
    out += norm("ln_f")
    if not s.tie_embeddings:
        out.append(Tensor("lm_head.weight", (s.vocab_size, d), "linear"))
    return out


def targets(s: Shape, embedding: bool) -> list[Tensor]:
    """The tensors a setting compresses: Linear weights, and the embeddings when `embedding`."""
    return [t for t in tensors(s) if t.kind == "linear" or (embedding and t.kind == "embedding")]


def model_bytes(s: Shape, setting: Setting) -> int:
    """Exact size in bytes of the model stored under `setting` (formats in the module docstring)."""
    total = FP32_BYTES * sum(t.numel for t in tensors(s))
    if setting.method == BASELINE:
        return total
    chosen = targets(s, setting.embedding)
    total -= FP32_BYTES * sum(t.numel for t in chosen)
    if setting.method in QUANT_METHODS:
        return total + sum(_quantized_bytes(t, setting.bits, setting.group_size) for t in chosen)
    return total + FP32_BYTES * kept_weights(chosen, setting) + sum(math.ceil(t.numel / 8) for t in chosen)


def _quantized_bytes(t: Tensor, bits: int, group_size: Optional[int]) -> int:
    rows, width = t.shape
    return math.ceil(t.numel * bits / 8) + SCALE_BYTES * rows * (width // (group_size or width))


def pruned_count(numel: int, sparsity: float) -> int:
    """Weights zeroed at `sparsity`: round(sparsity * numel), as torch.nn.utils.prune counts them."""
    return round(sparsity * numel)


def kept_weights(chosen: Sequence[Tensor], setting: Setting) -> int:
    """Non-zero target weights after pruning (global: one count over all targets; per-layer: per tensor)."""
    if setting.method == "prune_global":
        n = sum(t.numel for t in chosen)
        return n - pruned_count(n, setting.sparsity)
    if setting.method == "prune_2_4":
        return sum(t.numel // 2 for t in chosen)
    return sum(t.numel - pruned_count(t.numel, setting.sparsity) for t in chosen)


def check_widths(s: Shape, setting: Setting, where: str) -> None:
    """A group (rtn_group) or a 2:4 block must tile every target row: a clear error before any work."""
    need = setting.group_size if setting.method == "rtn_group" else 4 if setting.method == "prune_2_4" else None
    if not need:
        return
    widths = sorted({t.shape[1] for t in targets(s, setting.embedding)})
    bad = [w for w in widths if w % need]
    if bad:
        what = (f"compress.group_size={need} does not divide the width(s) {bad}" if setting.method == "rtn_group"
                else f"2:4 pruning needs widths divisible by 4; {bad} are not")
        ok = [g for g in (4, 8, 16, 32, 64, 128) if all(w % g == 0 for w in widths)]
        raise ValueError(f"{where}: {what} (its target widths d_model/d_ff: {widths}). Choose a group size dividing "
                         f"all of them{f', e.g. {ok[-1]}' if ok else ''}, or leave {setting.method} out of compress.methods.")


# --------------------------------------------------------------------------------------------
# The best model for a memory budget
# --------------------------------------------------------------------------------------------


def budget_ladder(low: float, high: float) -> list[float]:
    """Budgets in 1-2-5 steps (1 kB, 2 kB, 5 kB, 10 kB, ...): from the smallest step at or above `low`
    (the smallest model measured fits) to the first at or above `high` (every model fits)."""
    if not 0 < low <= high:
        raise ValueError(f"budget_ladder({low}, {high}): need 0 < low <= high.")
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    steps = [m * 10.0 ** e for e in decades for m in (1, 2, 5)]
    above = [b for b in steps if b >= low]
    return above[:next(i for i, b in enumerate(above) if b >= high) + 1]


def best_under(bytes_: Sequence[float], loss: Sequence[float], budget: float) -> Optional[int]:
    """Index of the lowest loss among the entries that fit in `budget` bytes (None: nothing fits).
    Ties go to the smaller model."""
    fits = [i for i, b in enumerate(bytes_) if b <= budget and math.isfinite(loss[i])]
    return min(fits, key=lambda i: (loss[i], bytes_[i])) if fits else None
