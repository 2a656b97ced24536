"""Full fine-tuning of a classifier, and its predictions.

Texts are encoded once with the sweep's tokenizer into a padded id matrix (`encode`); each epoch
draws a permutation from (seed, epoch) and groups examples of similar length into the same batch
(sorted within windows of 16 batches), so a batch is padded only to its own longest text. AdamW on
every parameter, linear warm-up then linear decay to 0 (the fine-tuning schedule of GPT-1, Radford
et al. 2018, Sec. 4.1, and BERT), gradient norm clipped at 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BUCKET_BATCHES = 16
"""Batches per window whose examples are sorted by length before being cut into batches."""


@dataclass(frozen=True)
class Encoded:
    """Texts as token ids: `ids` (n, max_tokens) right-padded, `lengths` (n,) >= 1."""

    ids: np.ndarray
    lengths: np.ndarray


def encode(tokenizer_path: str, texts, max_tokens: int) -> Encoded:
    """The first `max_tokens` tokens of each text under the sweep's tokenizer (an empty encoding keeps
    one end-of-text token, so every row has a token to pool)."""
    from llm_ray.data import EOT, load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    eot = tok.token_to_id(EOT)
    rows = [e.ids[:max_tokens] or [eot] for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    ids = np.full((len(rows), max_tokens), eot, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return Encoded(ids=ids, lengths=np.array([len(r) for r in rows], dtype=np.int64))


def batches(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int,
            bucket_batches: int = BUCKET_BATCHES) -> list:
    """Index arrays of one epoch: a (seed, epoch) permutation, length-sorted within windows of
    `bucket_batches` batches (1: plain random batches, each padded to its longest text)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    window = batch_size * bucket_batches
    out = []
    for w in range(0, len(order), window):
        chunk = order[w:w + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in np.random.default_rng([seed, epoch, 1]).permutation(len(out))]


def _batch(data: Encoded, idx: np.ndarray) -> tuple:
    lengths = data.lengths[idx]
    return torch.from_numpy(data.ids[idx, :lengths.max()]), torch.from_numpy(lengths)


def finetune(model, data: Encoded, labels, recipe: dict, log=None, bucket_batches: int = BUCKET_BATCHES) -> dict:
    """Train every parameter of `model` on (data, labels) with the recipe's AdamW and schedule.
    Returns timing and the last epoch's mean training loss."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    epochs = [batches(data.lengths, recipe["batch_size"], seed=recipe["seed"], epoch=e, bucket_batches=bucket_batches)
              for e in range(recipe["epochs"])]
    steps = sum(len(e) for e in epochs)
    warmup = int(round(recipe["warmup_fraction"] * steps))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    model.train()
    t0, losses = time.perf_counter(), []
    for e, epoch in enumerate(epochs):
        losses = []
        for idx in epoch:
            x, lengths = _batch(data, idx)
            loss = F.cross_entropy(model(x, lengths), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        if log:
            log(f"epoch {e + 1}/{len(epochs)}: train loss {np.mean(losses):.4f}")
    return {"train_s": time.perf_counter() - t0, "steps": steps, "train_loss": float(np.mean(losses))}


@torch.no_grad()
def predict(model, data: Encoded, batch_size: int = 128) -> np.ndarray:
    """Predicted class of every row (batches of similar length, in the original order)."""
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    preds = np.empty(len(order), dtype=np.int64)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        preds[idx] = model(*_batch(data, idx)).argmax(-1).numpy()
    return preds
