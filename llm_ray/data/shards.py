"""Token shards as workers read them: memory-mapped when local, fetched once per node when remote.

No torch or Ray here.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from tokenizers import Tokenizer

from llm_ray.data.prepare import file_stamp
from llm_ray.io import storage


def load_tokenizer(path: str) -> Tokenizer:
    """The entry's tokenizer (for decoding samples), from any fsspec URL."""
    with fsspec.open(path, "rb") as f:
        return Tokenizer.from_str(f.read().decode())


def load_tokens(url: str, dtype: str, local_cache: Optional[str] = None) -> np.ndarray:
    """A read-only memmap of a token shard.

    Remote shards are copied once per node into `local_cache` (default $LLM_RAY_TOKEN_CACHE or
    ~/.cache/llm_ray/tokens), under a name hashed from the URL and the remote file's size and
    stamp, and moved into place atomically, so concurrent workers on one node share one copy.
    """
    if dtype not in ("uint16", "uint32"):
        raise ValueError(f"dtype={dtype!r}: token shards are uint16 or uint32.")
    fs, path = fsspec.core.url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        info = fs.info(path)
        name = hashlib.sha256(f"{url}\0{info.get('size')}\0{file_stamp(fs, path, info)}".encode())
        cache = os.path.expanduser(local_cache or os.environ.get(
            "LLM_RAY_TOKEN_CACHE", "~/.cache/llm_ray/tokens"))
        local = os.path.join(cache, name.hexdigest()[:32] + ".bin")
        if not os.path.exists(local):
            storage.download_atomic(url, local)
        path = local
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")


