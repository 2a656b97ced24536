"""Deterministic batches: a pure function of (seed, step, rank, micro), and the fixed held-out set.

No torch or Ray here.
"""

from __future__ import annotations

import numpy as np

from llm_ray.data.prepare import PreparedData

def eval_windows(n_val_tokens: int, seq_len: int, eval_tokens: int) -> int:
    """How many held-out windows of seq_len are evaluated: eval_tokens // seq_len, or as many as
    the val split holds when it is shorter (a small corpus evaluates on what it has)."""
    return max(0, min(eval_tokens // seq_len, (n_val_tokens - 1) // seq_len))


def check_fits(data: PreparedData, seq_len: int, eval_tokens: int, log=print) -> None:
    """Fail on the driver, before Ray starts, when a split is too short for the run; warn (one
    line) when the val split is shorter than trainer.eval_tokens and is evaluated whole instead."""
    if data.n_train_tokens < seq_len + 1:
        raise ValueError(
            f"model.seq_len={seq_len} needs {seq_len + 1} train tokens but the train split has "
            f"{data.n_train_tokens}: lower model.seq_len or add text (data.sources, "
            f"data.max_bytes).")
    n = eval_windows(data.n_val_tokens, seq_len, eval_tokens)
    if n < 1:
        raise ValueError(
            f"model.seq_len={seq_len} needs {seq_len + 1} validation tokens but the val split has "
            f"{data.n_val_tokens} ({data.n_val_docs} documents): raise data.val_fraction, lower "
            f"data.document_bytes, or add text (data.sources, data.max_bytes).")
    if n < eval_tokens // seq_len:
        log(f"data: warning: the val split holds {data.n_val_tokens:,} tokens, fewer than "
            f"trainer.eval_tokens={eval_tokens:,}: evaluating on {n * seq_len:,} ({n} windows of "
            f"{seq_len}); the validation loss is noisier. Add text or raise data.val_fraction.")


def sample_batch(tokens: np.ndarray, seq_len: int, batch_size: int, *, seed: int, step: int,
                 rank: int, micro: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x, y int64 (batch_size, seq_len) with y[:, t] = x[:, t + 1] (next-token targets).

    Window starts are uniform on [0, len(tokens) - seq_len - 1] from PCG64 seeded by
    SeedSequence([seed, step, rank, micro]): no state is carried between calls, so resuming at
    `step` reproduces an uninterrupted run, and ranks and micro-batches draw independent streams.
    """
    n = len(tokens)
    if n < seq_len + 1:
        raise ValueError(f"model.seq_len={seq_len} needs {seq_len + 1} tokens; the split has {n}.")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step, rank, micro])))
    starts = rng.integers(0, n - seq_len, size=batch_size)
    w = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])


def val_windows(tokens: np.ndarray, seq_len: int, eval_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed held-out set: floor(eval_tokens / seq_len) non-overlapping windows spread evenly over
    the whole validation split (fewer when the split is shorter: `eval_windows`), so that the loss is measured on every held-out document rather than
    on whichever ones happen to come first (a loss on one or two files is a noisy, biased number)."""
    n = eval_windows(len(tokens), seq_len, eval_tokens)
    if n < 1:
        raise ValueError(
            f"trainer.eval_tokens={eval_tokens} with model.seq_len={seq_len} needs at least "
            f"{seq_len + 1} validation tokens; the val split has {len(tokens)}: add text.")
    starts = np.linspace(0, len(tokens) - seq_len - 1, n).astype(np.int64)  # gaps >= seq_len: disjoint
    w = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])
