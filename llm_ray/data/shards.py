"""Token shards as workers read them: memory-mapped when local, fetched once per node when remote.

A split is the concatenation of its shards in manifest order (`TokenStream`); indexing it is what
`sample_batch` and `val_windows` do, so batches are the same function of (seed, step, rank, micro)
however the split was cut into shards. No torch or Ray here.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from tokenizers import Tokenizer

from llm_ray.data.sources import file_stamp
from llm_ray.io import storage


def load_tokenizer(path: str) -> Tokenizer:
    """The entry's tokenizer (for decoding samples), from any fsspec URL."""
    with fsspec.open(path, "rb") as f:
        return Tokenizer.from_str(f.read().decode())


def token_byte_lengths(tok: Tokenizer) -> Optional[np.ndarray]:
    """UTF-8 bytes each token id stands for, for a byte-level tokenizer (GPT-2's scheme, ours and
    any `tokenizer.json` with a ByteLevel decoder: every character of a token is one byte); special
    tokens (<|endoftext|>) stand for none. None for other tokenizers."""
    spec = json.loads(tok.to_str())
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        return None
    special = {t["id"] for t in spec.get("added_tokens") or () if t.get("special")}
    n = tok.get_vocab_size()
    return np.array([0 if i in special else len(tok.id_to_token(i) or "") for i in range(n)], dtype=np.int64)


def eval_bytes_per_token(tok: Tokenizer, targets: np.ndarray) -> float:
    """UTF-8 bytes of text per target token over the evaluation windows (bits per byte divide the
    loss by this): exact per token for byte-level tokenizers, else each window decoded as a whole."""
    targets = np.asarray(targets)
    lengths = token_byte_lengths(tok)
    if lengths is not None:
        n_bytes = int(lengths[targets].sum())
    else:
        n_bytes = sum(len(tok.decode(row.tolist()).encode("utf-8")) for row in targets.reshape(len(targets), -1))
    return n_bytes / max(1, targets.size)


def _check_dtype(dtype: str) -> None:
    if dtype not in ("uint16", "uint32"):
        raise ValueError(f"dtype={dtype!r}: token shards are uint16 or uint32.")


def _node_cache(local_cache: Optional[str]) -> str:
    return os.path.expanduser(local_cache or os.environ.get("LLM_RAY_TOKEN_CACHE", "~/.cache/llm_ray/tokens"))


def load_tokens(url: str, dtype: str, local_cache: Optional[str] = None,
                info: Optional[dict] = None) -> np.ndarray:
    """A read-only memmap of one token shard.

    Remote shards are copied once per node into `local_cache` (default $LLM_RAY_TOKEN_CACHE or
    ~/.cache/llm_ray/tokens), under a name hashed from the URL and the remote file's size and
    stamp, and moved into place atomically, so concurrent workers on one node share one copy.
    `info`: the file's fsspec info when the caller listed it already (saves a request).
    """
    _check_dtype(dtype)
    fs, path = fsspec.core.url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        info = info or fs.info(path)
        name = hashlib.sha256(f"{url}\0{info.get('size')}\0{file_stamp(fs, path, info)}".encode())
        local = os.path.join(_node_cache(local_cache), name.hexdigest()[:32] + ".bin")
        if not os.path.exists(local):
            storage.download_atomic(url, local)
        path = local
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")


class TokenStream:
    """A split's shards read as one token sequence: len(), and indexing by integer arrays of any
    shape (or a slice) into the concatenation, without concatenating."""

    def __init__(self, parts: list[np.ndarray]):
        if not parts:
            raise ValueError("a token split needs at least one shard")
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        idx = np.asarray(idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"token index out of range [0, {len(self)})")
        which = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty(idx.shape, dtype=self.dtype)
        for s in np.unique(which):
            hit = which == s
            out[hit] = self.parts[s][idx[hit] - self.starts[s]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.parts)
        return whole if dtype is None else whole.astype(dtype)


def load_split(data, split: str, local_cache: Optional[str] = None) -> TokenStream:
    """One split ("train" or "val") of a prepared entry (a PreparedData), from its manifest."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}: use train or val.")
    _check_dtype(data.dtype)
    manifest = storage.read_json(data.manifest_path)
    shards = manifest["splits"][split]["shards"]
    fs, root = fsspec.core.url_to_fs(data.root)
    listed = {} if isinstance(fs, LocalFileSystem) else fs.find(f"{root}/{split}", detail=True)
    parts = [load_tokens(storage.join(data.root, s["path"]), data.dtype, local_cache,
                         listed.get(f"{root}/{s['path']}")) for s in shards]
    return TokenStream(parts)
