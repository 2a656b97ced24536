"""IsoFLOP sweep planning: pure functions, no Ray or torch.

A plan is the grid budgets C x model sizes N. For each cell, the exact FLOPs ledger gives the tokens
D = C / (FLOPs per token); the global batch gives the steps. Cells that make no sense are dropped with
the reason shown. The opinions (shape and hyper-parameter rules) are named recipes in
`llm_ray.core.recipes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

from llm_ray.core import flops as ledger
from llm_ray.core.choices import check_choice
from llm_ray.core.names import check_no_duplicates, check_path_name
from llm_ray.core.recipes import HP_RULES, WARMUP_RULES, hyper_parameters, shape_for_params, warmup_steps


SWEEP_SCHEDULES = ("independent", "wsd_branches")


@dataclass
class SweepConfig:
    """What to sweep (defaults: the embedded default sweep). The per-cell training settings come
    from the trainer/model/data groups; the budgets the report forecasts are `fit.predict_flops`."""

    name: str = "isoflop"
    """Sweep name: W&B group, directory name under sweep.storage_path."""
    budgets: list = field(default_factory=lambda: [1.6e11, 3.2e11, 6.3e11])
    """Compute budgets C in FLOPs (exact ledger). The default: sized so that `make demo` (set-up, 14 cells,
    their seed replicates and held-out runs at 4x) fits in 15 minutes on 2 cores, with every budget's
    IsoFLOP minimum inside the ladder (at 1e11 it fell below the smallest rung, 6.9k, whose parameters
    are mostly the 512-token embedding: the ladder cannot go lower at this vocabulary)."""
    sizes: list = field(default_factory=lambda: [6.9e3, 1.7e4, 3.0e4, 6.5e4, 1.4e5])
    """Target total parameter counts N of the ladder (the `aspect` shape rule picks shapes near
    them); the default ladder brackets the compute-optimal size of each default budget."""
    shapes: Optional[list] = None
    """Explicit shapes instead of a ladder: list of {n_layer, d_model, n_head[, d_ff]}."""
    aspect_ratio: float = 32.0
    """d_model / n_layer for the `aspect` shape rule."""
    head_dim: int = 8
    """Per-head width for the `aspect` shape rule (n_head = d_model / head_dim)."""
    min_layers: int = 2
    """The `aspect` rule's minimum depth (llm_ray.core.recipes: one-layer models follow another law)."""
    hp_rule: str = "width"
    """Learning-rate and batch rule: `fixed`, `deepseek` or `width` (llm_ray.core.recipes)."""
    width_ref: int = 64
    """The `width` rule's reference: the d_model at which a cell's lr equals trainer.lr."""
    warmup_rule: str = "fraction"
    """Warm-up rule: `fixed` (trainer.warmup_steps), `fraction` or `params` (llm_ray.core.recipes)."""
    warmup_fraction: float = 0.1
    """The `fraction` rule's share of each cell's steps."""
    schedule: str = "independent"
    """`independent`: every cell trains from scratch under trainer.schedule. `wsd_branches`: every
    cell under trainer.schedule=wsd, per model size one constant-lr trunk checkpointed at each cell's
    cooldown start and each cell a cooldown branch from it (llm_ray.core.branches; Hägele et al. 2024)."""
    max_epochs: float = 1.0
    """Drop cells that would see the train split more than this many times: the Chinchilla law
    assumes every token is seen once (Muennighoff et al. 2023 found up to ~4 epochs nearly as good
    as new data, but not free)."""
    validate_flops: list = field(default_factory=list)
    """Held-out budgets: after the fit, the law's recommended model is trained at each and its loss
    compared with the forecast registered before it trained (llm_ray.stages.validate). Empty: one
    budget, sweep.validate_factor x the top budget."""
    validate_factor: float = 4.0
    """With sweep.validate_flops empty, validate at this multiple of the top budget; 0: no validation."""
    min_tokens: float = 2.0e4
    """Drop cells with fewer training tokens than this."""
    tokens_per_param: list = field(default_factory=lambda: [0.5, 1000.0])
    """Drop cells whose D/N falls outside [low, high]."""
    min_steps_over_warmup: int = 10
    """Drop cells with fewer than warmup_steps + this many optimizer steps."""
    shard_above_params: float = 5.0e7
    """Cells with N above this train on trainer.num_workers ranks; smaller ones on 1 worker
    (sharding a tiny model only adds communication)."""
    train_in_process: bool = True
    """1-worker CPU cells train inside their Tune trial's process (Ray Train's local mode): no
    per-trial Train controller, placement group or worker actor (~14 s of start-up each on 2
    cores), but no mid-cell checkpoints or retries. false: every cell on Ray Train workers."""
    max_concurrent_trials: Optional[int] = None
    """Trials run at once; None: as many as the cluster's CPUs (or GPUs) hold."""
    stages: list = field(default_factory=list)
    """Stages to run on the finished sweep after its fit (and validation), in order, e.g.
    [compress, downstream]: each is also its own command, `python -m llm_ray.<stage> sweep_dir=...`."""
    dry_run: bool = False
    """Print the plan and stop."""
    storage_path: Optional[str] = None
    """Sweep directory root (absolute path or URI); None: trainer.storage_path."""
    est_flops_per_s: float = 1.0e10
    """Throughput assumed per worker for the plan's time estimate until measured."""
    replicate_minima: int = 1
    """Once the sweep's cells finished, train each budget's lowest-loss cell again with this many other
    seeds (trainer.seed + 1, + 2, ...): the run-to-run spread they measure widens the primary forecast's
    interval and enters the bootstrap as runs of their own (llm_ray.fitting.primary). 0: none."""

    def __post_init__(self) -> None:
        check_path_name("sweep.name", self.name)
        if not self.budgets or any(float(b) <= 0 for b in self.budgets):
            raise ValueError(f"sweep.budgets={list(self.budgets)}: give positive FLOP budgets, e.g. [1e12,3e12].")
        if not self.shapes and (not self.sizes or any(float(n) <= 0 for n in self.sizes)):
            raise ValueError(f"sweep.sizes={list(self.sizes)}: give positive parameter counts or sweep.shapes.")
        check_choice("sweep.hp_rule", self.hp_rule, HP_RULES)
        check_choice("sweep.schedule", self.schedule, SWEEP_SCHEDULES)
        check_choice("sweep.warmup_rule", self.warmup_rule, WARMUP_RULES)
        if not 0 < self.warmup_fraction < 1 or self.width_ref <= 0 or self.max_epochs <= 0 or self.min_layers < 1:
            raise ValueError("sweep.warmup_fraction must be in (0, 1); sweep.width_ref, sweep.max_epochs and "
                             "sweep.min_layers must be positive.")
        top = max(float(b) for b in self.budgets)
        if any(float(c) <= top for c in self.validate_flops):
            raise ValueError(f"sweep.validate_flops={list(self.validate_flops)}: a held-out budget must exceed the "
                             f"top budget {top:.3g} (the forecast is checked where the fit never saw), e.g. "
                             f"[{4 * top:.3g}].")
        if self.replicate_minima < 0:
            raise ValueError(f"sweep.replicate_minima={self.replicate_minima}: use 0 (no replicates) or more seeds.")
        if self.validate_factor != 0 and self.validate_factor <= 1:
            raise ValueError(f"sweep.validate_factor={self.validate_factor}: use a factor > 1, or 0 for no validation.")
        lo_hi = list(self.tokens_per_param)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] < lo_hi[1]:
            raise ValueError(f"sweep.tokens_per_param={lo_hi}: give [low, high] with 0 < low < high.")
        for s in self.shapes or ():
            if int(s["d_model"]) % int(s["n_head"]):
                raise ValueError(f"sweep.shapes entry {dict(s)}: n_head must divide d_model.")
        check_no_duplicates("sweep.budgets", self.budgets, key=float)
        check_no_duplicates("sweep.validate_flops", self.validate_flops, key=float)
        check_no_duplicates("sweep.shapes", self.shapes or (), key=lambda s: (
            int(s["n_layer"]), int(s["d_model"]), int(s["n_head"]), int(s.get("d_ff") or 4 * int(s["d_model"]))))

    @property
    def held_out_budgets(self) -> list:
        """The budgets the sweep validates its law on (sweep.validate_flops, else validate_factor x top)."""
        if self.validate_flops:
            return [float(c) for c in self.validate_flops]
        top = max(float(b) for b in self.budgets)
        return [self.validate_factor * top] if self.validate_factor else []


@dataclass(frozen=True)
class Cell:
    budget: float
    n_layer: int
    d_model: int
    n_head: int
    d_ff: int
    params: int
    params_non_embedding: int
    tokens: float
    steps: int
    global_batch_tokens: int
    lr: float
    num_workers: int
    flops_per_token: float
    warmup_steps: int = 0
    epochs: Optional[float] = None
    """D / tokens in the train split (None before the data is prepared)."""
    seed: int = 0
    """Replicate index: 0 is the sweep's own run, k > 0 the same cell trained with trainer.seed + k."""

    @property
    def name(self) -> str:
        """A run name made of sweep coordinates, e.g. `C2e11-N150k` (a replicate: `C2e11-N150k-s1`)."""
        return f"C{_short(self.budget)}-N{_count(self.params)}" + (f"-s{self.seed}" if self.seed else "")

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


@dataclass(frozen=True)
class Dropped:
    """A cell the plan leaves out, and why (printed with the plan, kept in plan.json)."""

    budget: float
    params: int
    reason: str


@dataclass(frozen=True)
class PlanContext:
    """What the plan needs besides the sweep: the model's fixed dimensions, the trainer's settings,
    and (once the data is prepared) how many tokens the train split holds."""

    seq_len: int
    vocab_size: int
    tie_embeddings: bool
    lr: float
    global_batch_tokens: int
    micro_batch_tokens: int
    warmup_steps: int
    num_workers: int
    train_tokens: Optional[int] = None
    """Tokens in the train split; None (not prepared yet): epochs are not known or checked."""
    family: str = "gpt2"
    """model.family: whose parameter and FLOP counts size the cells (llm_ray.core.flops)."""
    qk_norm: bool = False
    bias: bool = True

    def shape(self, n_layer: int, d_model: int, n_head: int, d_ff: Optional[int] = None) -> ledger.Shape:
        """A ladder shape with this context's fixed dimensions; d_ff None: the family's default."""
        return ledger.Shape(n_layer=n_layer, d_model=d_model, n_head=n_head,
                            d_ff=d_ff or ledger.default_d_ff(self.family, d_model), seq_len=self.seq_len,
                            vocab_size=self.vocab_size, tie_embeddings=self.tie_embeddings,
                            bias=self.bias and self.family == "gpt2", family=self.family, qk_norm=self.qk_norm)


def plan_cells(sweep: SweepConfig, **context) -> tuple[list[Cell], list[Dropped]]:
    """The grid budgets x shapes, each cell sized by the exact ledger; dropped cells with reasons.
    `context`: the fields of PlanContext."""
    ctx = PlanContext(**context)
    cells, dropped = [], []
    for budget in sorted(float(b) for b in sweep.budgets):
        for shape in ladder_shapes(sweep, ctx):
            planned = plan_cell(sweep, ctx, budget, shape)
            (cells if isinstance(planned, Cell) else dropped).append(planned)
    return cells, dropped


def ladder_shapes(sweep: SweepConfig, ctx: PlanContext) -> list[ledger.Shape]:
    """sweep.shapes as given, or the `aspect` shape nearest each of sweep.sizes (duplicates once)."""
    if sweep.shapes:
        return [ctx.shape(int(s["n_layer"]), int(s["d_model"]), int(s["n_head"]), int(s.get("d_ff") or 0) or None)
                for s in sweep.shapes]
    return list(dict.fromkeys(size_to_shape(sweep, ctx, n) for n in sweep.sizes))


def size_to_shape(sweep: SweepConfig, ctx: PlanContext, params: float) -> ledger.Shape:
    return shape_for_params(params, head_dim=sweep.head_dim, aspect_ratio=sweep.aspect_ratio,
                            min_layers=sweep.min_layers, make=ctx.shape)


def plan_cell(sweep: SweepConfig, ctx: PlanContext, budget: float, s: ledger.Shape, *,
              check_ratio: bool = True):
    """One cell under the sweep's recipes, or why it is dropped (`check_ratio=False`: keep a D/N
    outside sweep.tokens_per_param, as a validation run at the forecast N_opt does)."""
    n = ledger.param_count(s)
    per_token = ledger.flops_per_token(s).exact
    cell_lr, batch = hyper_parameters(sweep.hp_rule, budget, lr=ctx.lr, global_batch_tokens=ctx.global_batch_tokens,
                                      batch_quantum=ctx.micro_batch_tokens * ctx.num_workers, d_model=s.d_model,
                                      width_ref=sweep.width_ref)
    steps = int(round(budget / per_token / batch))
    warmup = warmup_steps(sweep.warmup_rule, steps=steps, params=n.total, batch_tokens=batch,
                          fixed=ctx.warmup_steps, fraction=sweep.warmup_fraction)
    tokens = steps * batch
    epochs = tokens / ctx.train_tokens if ctx.train_tokens else None
    reason = drop_reason(sweep, budget / per_token, n.total, steps, warmup, epochs, check_ratio)
    if reason:
        return Dropped(budget=budget, params=n.total, reason=reason)
    return Cell(budget=budget, n_layer=s.n_layer, d_model=s.d_model, n_head=s.n_head, d_ff=s.d_ff,
                params=n.total, params_non_embedding=n.non_embedding, tokens=tokens, steps=steps,
                global_batch_tokens=batch, lr=cell_lr, warmup_steps=warmup, epochs=epochs,
                num_workers=ctx.num_workers if n.total > sweep.shard_above_params else 1,
                flops_per_token=per_token)


def drop_reason(sweep: SweepConfig, tokens: float, params: int, steps: int, warmup: int,
                epochs: Optional[float], check_ratio: bool) -> Optional[str]:
    lo, hi = sweep.tokens_per_param
    if tokens < sweep.min_tokens:
        return f"D={tokens:.3g} tokens < sweep.min_tokens={sweep.min_tokens:g}"
    if check_ratio and not lo <= tokens / params <= hi:
        return f"D/N={tokens / params:.3g} outside sweep.tokens_per_param=[{lo:g}, {hi:g}]"
    if steps < warmup + sweep.min_steps_over_warmup:
        return f"{steps} steps < warm-up {warmup} + sweep.min_steps_over_warmup={sweep.min_steps_over_warmup}"
    if epochs is not None and epochs > sweep.max_epochs:
        return (f"{epochs:.2f} epochs of the train split > sweep.max_epochs={sweep.max_epochs:g} (repeated "
                f"tokens; the law assumes each is seen once): add text (data.sources) or lower the budget")
    return None


def minima_replicates(finished: list[tuple[Cell, float]], n_seeds: int) -> list[Cell]:
    """Each budget's lowest-loss cell again with seeds 1..n_seeds (`finished`: (cell, final loss) of the
    cells that trained ok; replicates among them are ignored): the noise of a budget's minimum is what
    a forecast there is judged against (sweep.replicate_minima)."""
    best: dict = {}
    for cell, loss in finished:
        if cell.seed == 0 and (cell.budget not in best or loss < best[cell.budget][1]):
            best[cell.budget] = (cell, loss)
    return [dataclasses.replace(cell, seed=k) for cell, _ in (best[b] for b in sorted(best))
            for k in range(1, n_seeds + 1)]


def cell_key(job_dict: dict) -> str:
    """Content key of a cell's full training config: same config, same key, on any machine."""
    blob = json.dumps(job_dict, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def estimate_seconds(cell: Cell, flops_per_s: float) -> float:
    """Training time of a cell at `flops_per_s` per worker."""
    return cell.budget / (flops_per_s * cell.num_workers)


def format_plan(cells: list[Cell], dropped: list[Dropped], flops_per_s: float) -> str:
    """The plan as a table a person reads before launching."""
    head = (f"{'budget C':>10} {'shape (L x d, h)':>18} {'N':>8} {'D':>9} {'D/N':>7} {'epochs':>6} {'steps':>6} "
            f"{'warmup':>6} {'lr':>8} {'workers':>7} {'est':>6}")
    lines = [head, "-" * len(head)]
    for c in cells:
        epochs = f"{c.epochs:6.2f}" if c.epochs is not None else f"{'n/a':>6}"
        lines.append(f"{c.budget:10.3g} {f'{c.n_layer} x {c.d_model}, {c.n_head}':>18} {_count(c.params):>8} "
                     f"{c.tokens:9.3g} {c.tokens_per_param:7.1f} {epochs} {c.steps:6d} {c.warmup_steps:6d} "
                     f"{c.lr:8.2e} {c.num_workers:7d} {estimate_seconds(c, flops_per_s):5.0f}s")
    total = sum(estimate_seconds(c, flops_per_s) for c in cells)
    lines.append(f"{len(cells)} cells, ~{total / 60:.1f} min of training at {flops_per_s:.2g} FLOP/s per worker"
                 " (before parallelism and start-up)")
    if cells and cells[0].epochs is None:
        lines.append("epochs: n/a until the corpus is prepared (a dry run does not prepare it)")
    lines += [f"dropped C={d.budget:.3g} N={_count(d.params)}: {d.reason}" for d in dropped]
    return "\n".join(lines)


def _short(x: float) -> str:
    """3e+13 -> '3e13', 2.5e12 -> '2.5e12'."""
    m, e = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:.2g}", "0")
    return f"{m}e{int(e)}"


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))
