"""A finished run's model, back from its files: the saved final weights (weights.pt beside
result.json), and its loss measured on exactly the held-out windows its training evaluated on.

The one place later stages (compression, downstream tasks) reload a trained model; a test checks that
the reloaded weights give the run's recorded validation loss.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from llm_ray.core.records import RunRecord
from llm_ray.io import storage
from llm_ray.training.model import Transformer


def load_trained(run_dir: str, record: RunRecord) -> Transformer:
    """The run's final model (fp32, eval mode) from `<run_dir>/<record.weights>` (any fsspec URL)."""
    if not record.weights:
        raise ValueError(f"{run_dir}: result.json names no saved weights (trainer.save_weights=false, or a "
                         f"run that did not finish ok).")
    fs, path = storage.fs_and_path(storage.join(run_dir, record.weights))
    with fs.open(path, "rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    model = Transformer(record.model)
    model.load_state_dict(state)
    return model.eval()


def held_out(record: RunRecord) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int64 (windows, seq_len): the run's fixed validation windows, as its ranks evaluated them
    (each of world_size ranks a slice of len // world_size windows; a remainder is not evaluated)."""
    from llm_ray.data import PreparedData, load_split, val_windows

    job = record.job
    x, y = val_windows(load_split(PreparedData.from_dict(record.data), "val"), job.model.seq_len,
                       job.trainer.eval_tokens)
    world = record.world_size or 1
    used = (len(x) // world) * world
    return x[:used], y[:used]


@torch.no_grad()
def mean_loss(model: Transformer, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Mean cross-entropy [nats/token] over the windows, in batches (each window weighs the same)."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        _, loss = model(torch.from_numpy(x[i:i + batch_size]), torch.from_numpy(y[i:i + batch_size]))
        total += loss.item() * len(x[i:i + batch_size])
    return total / len(x)
