"""Where a preparation step runs: `fn(piece, **kwargs)` for every piece, in this process or as
Ray Data tasks spread over the cluster.

The Ray Data form is `from_items` (one row per piece: which files, nothing read yet) ->
`map_batches(fn, batch_size=1, num_cpus=1)` -> `iter_rows`: each task reads its piece's files
itself (fsspec, so it can name a bad file and record, and number its documents stably), encodes
them with the tokenizer's batch encoding and writes its shards to the storage URL; only a small
record per piece comes back to the driver, as pieces finish, so the driver never holds the corpus.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Callable, Iterator, Optional

from llm_ray.data.sources import CorpusError, Piece


def run_pieces(fn: Callable[..., dict], pieces: list[Piece], kwargs: dict, *, use_ray: bool,
               start_ray: Optional[Callable[[], None]] = None) -> Iterator[dict]:
    """fn's record for every piece, in the order they finish; each carries the `node` it ran on."""
    if not use_ray:
        for piece in pieces:
            yield {**fn(piece, **kwargs), "node": "driver"}
        return
    import ray

    if not ray.is_initialized():
        (start_ray or ray.init)()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver logs its own progress (documents, bytes, ETA)
    ctx.raise_original_map_exception = True  # a CorpusError, not "UDF failed to process a data block"
    rows = [{"piece": pickle.dumps(p)} for p in pieces]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _apply, batch_size=1, num_cpus=1, fn_kwargs={"fn": fn, "kwargs": kwargs})
    try:
        for row in ds.iter_rows():
            yield json.loads(row["record"])
    except Exception as err:  # noqa: BLE001 - re-raised, as the user's error when it is one
        cause = corpus_error(err)
        if cause is not None:
            raise CorpusError(str(cause.args[0]) if cause.args else str(cause)) from None
        raise


def _apply(batch: dict, fn: Callable[..., dict], kwargs: dict) -> dict:
    import numpy as np
    import ray

    # One thread per task: Ray reserved one CPU for it (the tokenizer would otherwise use all cores).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    node = ray.get_runtime_context().get_node_id()
    records = [json.dumps({**fn(pickle.loads(p), **kwargs), "node": node}) for p in batch["piece"]]
    return {"record": np.array(records, dtype=object)}


def corpus_error(err: BaseException) -> Optional[CorpusError]:
    """The CorpusError a task raised, found through Ray's wrappers (RayTaskError.cause, __cause__)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        cause = getattr(err, "cause", None)
        if isinstance(cause, CorpusError):
            return cause
        if isinstance(err, CorpusError) and not hasattr(err, "cause"):
            return err
        err = cause if isinstance(cause, BaseException) else (err.__cause__ or err.__context__)
    return None
