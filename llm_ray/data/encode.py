"""The two things a preparation task does to one piece: read a tokenizer sample, and encode.

Both are plain functions of (piece, options): the driver runs them in its own process for a small
corpus and as Ray Data tasks across the cluster for a large one (`llm_ray.data.pipeline`), with
the same result. A piece's output is

    <entry>/train/<piece>-<k>.bin, <entry>/val/<piece>-<k>.bin   raw token ids, `shard_tokens` each
                                                                  (the piece's last shard shorter)
    <entry>/pieces/<piece>.json                                   what it wrote; written last

so a piece is done when its marker exists and its shards have the sizes the marker records. Each
document's tokens are followed by <|endoftext|> (as nanoGPT's data/openwebtext/prepare.py does), so
the split's token stream is the same however the documents were grouped into pieces and shards.
No torch or Ray here.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from llm_ray.data.overlap import line_hashes, to_npy
from llm_ray.data.sources import Piece, ReadOptions, piece_documents, split_u
from llm_ray.io import storage

EOT = "<|endoftext|>"
SPLITS = ("train", "val")
ENCODE_BATCH_BYTES = 4_000_000
"""Text handed to the tokenizer's batch encoding at a time (bounds a task's memory)."""


def marker_path(piece: int) -> str:
    return f"pieces/{piece:06d}.json"


def shard_path(split: str, piece: int, k: int) -> str:
    return f"{split}/{piece:06d}-{k:04d}.bin"


def lines_path(split: str, piece: int) -> str:
    """The piece's sampled line hashes of one split (llm_ray.data.overlap), a .npy of uint64."""
    return f"lines/{piece:06d}-{split}.npy"


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def sample_piece(piece: Piece, opts: ReadOptions, budget: Optional[int]) -> dict:
    """The piece's first train documents, up to `budget` bytes of text (the one crossing it cut
    to fit; None: all); how many train/val documents were seen (`complete`: the whole piece), and
    the seen documents with the smallest and largest split_u (to keep a small corpus's splits
    non-empty)."""
    texts, size, seen = [], 0, {"train": 0, "val": 0}
    lowest, highest = (2.0, ""), (-1.0, "")
    complete = True
    for doc_id, text in piece_documents(piece, opts):
        u = split_u(doc_id, opts.seed)
        lowest, highest = min(lowest, (u, doc_id)), max(highest, (u, doc_id))
        if opts.is_val(doc_id):
            seen["val"] += 1
            continue
        seen["train"] += 1
        n = utf8_len(text)
        if budget is not None and size + n > budget:
            texts.append(text[:budget - size])  # at most that many bytes
            complete = False
            break
        texts.append(text)
        size += n
    return {"piece": piece.index, "texts": texts, "complete": complete, "docs": seen,
            "lowest": lowest, "highest": highest}


class ShardWriter:
    """Token ids of one split of one piece, written `shard_tokens` at a time, each shard atomically."""

    def __init__(self, root: str, split: str, piece: int, shard_tokens: int, dtype: str):
        self.root, self.split, self.piece = root, split, piece
        self.shard_tokens, self.dtype = shard_tokens, np.dtype(dtype)
        self.parts: list[np.ndarray] = []
        self.n = 0
        self.shards: list[dict] = []

    def add(self, ids: np.ndarray) -> None:
        self.parts.append(ids)
        self.n += len(ids)
        while self.n >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self) -> list[dict]:
        if self.n:
            self._flush(self.n)
        return self.shards

    def _flush(self, count: int) -> None:
        data = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        path = shard_path(self.split, self.piece, len(self.shards))
        shard = np.ascontiguousarray(data[:count])
        storage.write_bytes_atomic(storage.join(self.root, path), memoryview(shard).cast("B"))
        self.shards.append({"path": path, "tokens": int(count)})
        self.parts, self.n = [data[count:]], self.n - count


def encode_texts(tok, texts: list[str], eot: int, dtype: str) -> np.ndarray:
    """doc0 EOT doc1 EOT ... docN EOT, by the tokenizer's batch encoding."""
    flat: list[int] = []
    for enc in tok.encode_batch_fast(texts, add_special_tokens=False):
        flat += enc.ids  # each .ids builds a Python list: read it once
        flat.append(eot)
    return np.array(flat, dtype=np.dtype(dtype))


def index_piece_lines(piece: Piece, opts: ReadOptions, root: str) -> dict:
    """data.dedup_lines' first pass over one piece: every long line's hash (llm_ray.data.overlap), in
    order, written to `dedup/<piece>-all.npy`; the driver then finds which occurred in earlier pieces."""
    hashes = [h for _, text in piece_documents(piece, opts) for h in line_hashes(text, sample=1)]
    path = f"dedup/{piece.index:06d}-all.npy"
    storage.write_bytes_atomic(storage.join(root, path), to_npy(hashes))
    return {"piece": piece.index, "path": path, "lines": len(hashes)}


def encode_piece(piece: Piece, opts: ReadOptions, tokenizer_json: str, root: str, dtype: str,
                 shard_tokens: int) -> dict:
    """Read, split and encode one piece into its shards, then write its marker (returned)."""
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    tok = Tokenizer.from_str(tokenizer_json)
    eot = tok.token_to_id(EOT)
    writers = {s: ShardWriter(root, s, piece.index, shard_tokens, dtype) for s in SPLITS}
    batch: dict[str, list[str]] = {s: [] for s in SPLITS}
    batch_bytes = dict.fromkeys(SPLITS, 0)
    docs, text_bytes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    hashes: dict[str, list[int]] = {s: [] for s in SPLITS}
    for doc_id, text in piece_documents(piece, opts):
        split = "val" if opts.is_val(doc_id) else "train"
        hashes[split] += line_hashes(text)
        size = utf8_len(text)
        batch[split].append(text)
        docs[split] += 1
        text_bytes[split] += size
        batch_bytes[split] += size
        if batch_bytes[split] >= ENCODE_BATCH_BYTES:
            writers[split].add(encode_texts(tok, batch[split], eot, dtype))
            batch[split], batch_bytes[split] = [], 0
    splits = {}
    for s in SPLITS:
        if batch[s]:
            writers[s].add(encode_texts(tok, batch[s], eot, dtype))
        shards = writers[s].close()
        storage.write_bytes_atomic(storage.join(root, lines_path(s, piece.index)), to_npy(hashes[s]))
        splits[s] = {"docs": docs[s], "text_bytes": text_bytes[s],
                     "tokens": sum(x["tokens"] for x in shards), "shards": shards,
                     "lines": lines_path(s, piece.index)}
    record = {"piece": piece.index, "files": len(piece.files), "first": piece.files[0].name,
              "stored_bytes": piece.stored_bytes, "splits": splits,
              "seconds": round(time.perf_counter() - t0, 3)}
    storage.write_json(storage.join(root, marker_path(piece.index)), record)
    return record
