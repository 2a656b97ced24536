"""Corpus -> byte-level BPE tokenizer -> flat token shards -> deterministic batches.

`prepare_data` runs once on the driver. It reads the documents named by `DataConfig.sources`
(fsspec paths or globs, or the word `stdlib`: this machine's Python standard-library sources,
real text that needs no download), splits them by document into train/val, trains a byte-level
BPE on the train documents only, and writes

    <cache_dir>/<key>/{tokenizer.json, train.bin, val.bin, meta.json}

where `key` hashes the source files' (name, size, mtime/ETag), every DataConfig field that changes
the output and `FORMAT_VERSION`. The `.bin` files are raw uint16/uint32 arrays (documents joined by
`<|endoftext|>`) that workers memory-map. meta.json is written last and atomically: an entry
without it is a crashed build and is rebuilt, never read.

Batches are a pure function of (seed, step, rank, micro), so a run resumed from a checkpoint sees
exactly the batches an uninterrupted run would. No torch or Ray here: this module is imported by
the driver before any worker exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import fsspec
import numpy as np
import tokenizers
from fsspec.implementations.local import LocalFileSystem
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_ray.data.corpora import corpus_dir, is_corpus
from llm_ray.io import storage

FORMAT_VERSION = 1
"""Bump when the on-disk layout or the tokenization recipe changes: old cache entries are ignored."""
STDLIB = "stdlib"
EOT = "<|endoftext|>"
_TEST_DIRS = {"test", "tests", "idle_test"}
_NOT_STDLIB_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# Fields of fsspec's info() that change when a file's content does (local, S3, GCS, memory).
_STAMP_KEYS = ("mtime", "ETag", "etag", "md5Hash", "crc32c", "generation", "checksum",
               "LastModified", "updated", "created")
_ENCODE_CHUNK_BYTES = 32_000_000


@dataclass(frozen=True)
class PreparedData:
    """A complete cache entry: where its files are and what they hold (passed to Ray workers)."""

    root: str
    key: str
    tokenizer_path: str
    train_path: str
    val_path: str
    dtype: str
    vocab_size: int
    n_train_tokens: int
    n_val_tokens: int
    n_train_docs: int
    n_val_docs: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreparedData":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class _File:
    name: str      # stable id used for sorting and the split: a URL, a local path, or stdlib/<rel>
    fs: Any
    path: str
    size: int
    stamp: str


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

def stdlib_text_files(exclude_tests: bool = True) -> list[str]:
    """Sorted `.py` files of this interpreter's standard library, without site-packages (and
    without test folders, whose generated, repetitive text would skew a small corpus)."""
    root = sysconfig.get_paths()["stdlib"]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs
                   if x not in _NOT_STDLIB_DIRS and not (exclude_tests and x in _TEST_DIRS)]
        out += [os.path.join(d, f) for f in files if f.endswith(".py")]
    return sorted(out)


def file_stamp(fs, path: str, info: dict) -> str:
    """What changes when a file's content does (mtime, ETag, checksum...), from fsspec's info()."""
    stamp = "|".join(f"{k}={info[k]}" for k in _STAMP_KEYS if info.get(k) is not None)
    return stamp or str(fs.ukey(path))


def _patterns(cfg) -> list[str]:
    return [cfg.sources] if isinstance(cfg.sources, str) else [str(s) for s in cfg.sources]


def _list_sources(cfg) -> list[_File]:
    """Every file the patterns match, sorted by name and de-duplicated (no content is read)."""
    found: dict[str, _File] = {}
    for pattern in _patterns(cfg):
        matched: list[_File] = []
        if pattern == STDLIB or is_corpus(pattern):
            root, paths = _named_source(pattern, cfg)
            local = fsspec.filesystem("file")
            for p in paths:
                st = os.stat(p)
                name = f"{pattern}/" + os.path.relpath(p, root).replace(os.sep, "/")
                matched.append(_File(name, local, p, st.st_size, f"mtime_ns={st.st_mtime_ns}"))
        else:
            url = os.path.expanduser(pattern) if "://" not in pattern else pattern
            fs, path = fsspec.core.url_to_fs(url)
            matches = fs.glob(path, detail=True)
            for p, info in list(matches.items()):
                if info.get("type") == "directory":  # a directory means every file under it
                    matches.pop(p)
                    matches.update(fs.find(p, detail=True))
            for p, info in matches.items():
                if info.get("type", "file") != "file":
                    continue
                name = p if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(p)
                matched.append(_File(name, fs, p, int(info.get("size") or 0), file_stamp(fs, p, info)))
        if not matched:
            raise ValueError(
                f"data.sources: {pattern!r} matches no file. Fix the path or glob (absolute, "
                f"e.g. '/data/corpus/*.txt', 's3://bucket/corpus/**/*.txt'; check credentials "
                f"for remote URLs), or use data.sources='[stdlib]'.")
        found.update((f.name, f) for f in matched)
    return [found[k] for k in sorted(found)]


def _named_source(word: str, cfg) -> tuple[str, list[str]]:
    """(root, sorted files) of a source word: `stdlib`, or a corpus shipped in a package
    (llm_ray.data.corpora, e.g. `peoples_daily`). Documents are named `<word>/<path under root>`."""
    if word == STDLIB:
        return sysconfig.get_paths()["stdlib"], stdlib_text_files(cfg.exclude_tests)
    root = corpus_dir(word)
    return root, sorted(os.path.join(root, f) for f in os.listdir(root))


def _select(files: list[_File], max_bytes: Optional[int]) -> list[_File]:
    """Files in order until `max_bytes` is reached (the file crossing it is kept whole)."""
    out, total = [], 0
    for f in files:
        if max_bytes is not None and total >= max_bytes:
            break
        if f.size > 0:  # empty files (e.g. many __init__.py) are not documents
            out.append(f)
            total += f.size
    return out


def _read(files: list[_File]) -> list[str]:
    """File contents as text, in order; async filesystems (S3, GCS) fetch concurrently."""
    blobs: dict[tuple[int, str], bytes] = {}
    groups: dict[int, tuple[Any, list[str]]] = {}
    for f in files:
        groups.setdefault(id(f.fs), (f.fs, []))[1].append(f.path)
    for fs, paths in groups.values():
        got = fs.cat(paths) if getattr(fs, "async_impl", False) else {}
        for p in paths:
            blobs[(id(fs), p)] = got[p] if p in got else fs.cat_file(p)
    return [blobs[(id(f.fs), f.path)].decode("utf-8", errors="replace") for f in files]


def _split(names: list[str], seed: int, val_fraction: float) -> list[bool]:
    """is_val per document: sha256(seed, name) as a number in [0, 1) below val_fraction.

    Stable across machines and Python versions (unlike hash()); the name of a stdlib file is
    relative to the stdlib root. Equivalent formulation: the documents with the smallest hashes
    are held out; their count is clipped to [1, n-1] so that neither split is empty.
    """
    if len(names) < 2:
        raise ValueError(
            f"data.sources: found {len(names)} non-empty document(s); the train/val split is by "
            f"document and needs at least 2. Add files, or split the text into several files.")
    u = [int.from_bytes(hashlib.sha256(f"{seed}\0{n}".encode()).digest()[:8], "big") / 2.0**64
         for n in names]
    n_val = min(max(sum(x < val_fraction for x in u), 1), len(names) - 1)
    val = set(sorted(range(len(names)), key=lambda i: (u[i], names[i]))[:n_val])
    return [i in val for i in range(len(names))]


# --------------------------------------------------------------------------------------------
# Tokenizer and shards
# --------------------------------------------------------------------------------------------

def _resolve_dtype(cfg) -> str:
    if cfg.token_dtype == "auto":
        return "uint16" if cfg.vocab_size <= 65536 else "uint32"
    return cfg.token_dtype


def _train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """GPT-2 style byte-level BPE: any text encodes (no unknown token) and decodes back exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer, length=len(texts))
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(
            f"data.vocab_size={vocab_size}: BPE found only {tok.get_vocab_size()} tokens in the "
            f"train documents (the corpus is too small for that many merges). Lower "
            f"data.vocab_size to at most {tok.get_vocab_size()} or add text (data.sources, "
            f"data.max_bytes).")
    return tok


def _encode(tok: Tokenizer, texts: list[str], dtype: str) -> np.ndarray:
    """One flat array: doc0 EOT doc1 EOT ... docN (encoded in chunks to bound memory)."""
    eot = tok.token_to_id(EOT)
    parts: list[np.ndarray] = []
    i = 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and (j == i or size < _ENCODE_CHUNK_BYTES):
            size += len(texts[j])
            j += 1
        for k, enc in enumerate(tok.encode_batch_fast(texts[i:j], add_special_tokens=False)):
            if i + k:
                parts.append(np.array([eot], dtype=dtype))
            parts.append(np.asarray(enc.ids, dtype=dtype))
        i = j
    return np.concatenate(parts)


def _cache_key(cfg, files: list[_File], dtype: str) -> str:
    blob = json.dumps({
        "format": FORMAT_VERSION, "tokenizers": tokenizers.__version__,
        "files": [(f.name, f.size, f.stamp) for f in files],
        "exclude_tests": bool(cfg.exclude_tests), "max_bytes": cfg.max_bytes,
        "vocab_size": int(cfg.vocab_size), "val_fraction": float(cfg.val_fraction),
        "dtype": dtype, "seed": int(cfg.seed),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _entry(root: str, key: str, meta: dict) -> PreparedData:
    return PreparedData(
        root=root, key=key, tokenizer_path=f"{root}/tokenizer.json", train_path=f"{root}/train.bin",
        val_path=f"{root}/val.bin", dtype=meta["dtype"], vocab_size=meta["vocab_size"],
        n_train_tokens=meta["n_train_tokens"], n_val_tokens=meta["n_val_tokens"],
        n_train_docs=meta["n_train_docs"], n_val_docs=meta["n_val_docs"])


def _cached(fs, root_path: str, root: str, key: str) -> Optional[PreparedData]:
    """The entry if meta.json exists and the shards have the sizes it records, else None."""
    try:
        meta = json.loads(fs.cat_file(f"{root_path}/meta.json"))
        size = np.dtype(meta["dtype"]).itemsize
        if (fs.size(f"{root_path}/train.bin") != meta["n_train_tokens"] * size
                or fs.size(f"{root_path}/val.bin") != meta["n_val_tokens"] * size
                or not fs.exists(f"{root_path}/tokenizer.json")):
            return None
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return _entry(root, key, meta)


def prepare_data(cfg, cache_dir: str, log: Callable[[str], Any] = print) -> PreparedData:
    """Build (or find) the cache entry for `cfg` under `cache_dir` (local path or fsspec URL).

    Idempotent: a hit costs a listing of the sources and a read of meta.json. Concurrent callers
    with the same key may both build; they write identical files, each moved into place atomically.
    """
    t0 = time.perf_counter()
    dtype = _resolve_dtype(cfg)
    files = _select(_list_sources(cfg), cfg.max_bytes)
    key = _cache_key(cfg, files, dtype)
    if "://" not in cache_dir:
        cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    root = f"{cache_dir.rstrip('/')}/{key}"
    fs, root_path = fsspec.core.url_to_fs(root)
    if isinstance(fs, LocalFileSystem):
        root = root_path
    hit = _cached(fs, root_path, root, key)
    if hit is not None:
        log(f"data: cache hit {root} ({hit.n_train_tokens:,} train / {hit.n_val_tokens:,} val "
            f"tokens, {time.perf_counter() - t0:.2f} s)")
        return hit

    n_bytes = sum(f.size for f in files)
    log(f"data: reading {len(files)} documents ({n_bytes / 1e6:.1f} MB) from {_patterns(cfg)}")
    texts = _read(files)
    is_val = _split([f.name for f in files], cfg.seed, cfg.val_fraction)
    train = [t for t, v in zip(texts, is_val) if not v]
    val = [t for t, v in zip(texts, is_val) if v]
    log(f"data: training byte-level BPE (vocab {cfg.vocab_size}) on {len(train)} train documents "
        f"({len(val)} held out)")
    t1 = time.perf_counter()
    tok = _train_tokenizer(train, cfg.vocab_size)
    log(f"data: BPE trained in {time.perf_counter() - t1:.1f} s; encoding")
    t1 = time.perf_counter()
    train_ids, val_ids = _encode(tok, train, dtype), _encode(tok, val, dtype)
    log(f"data: encoded in {time.perf_counter() - t1:.1f} s")

    fs.makedirs(root_path, exist_ok=True)
    storage.write_bytes_atomic(f"{root}/tokenizer.json", tok.to_str().encode())
    storage.write_bytes_atomic(f"{root}/train.bin", memoryview(train_ids).cast("B"))
    storage.write_bytes_atomic(f"{root}/val.bin", memoryview(val_ids).cast("B"))
    meta = {
        "format": FORMAT_VERSION, "key": key, "dtype": dtype, "vocab_size": tok.get_vocab_size(),
        "eot_id": tok.token_to_id(EOT), "n_train_tokens": int(train_ids.size),
        "n_val_tokens": int(val_ids.size), "n_train_docs": len(train), "n_val_docs": len(val),
        "n_bytes": n_bytes, "tokenizers": tokenizers.__version__,
        "sources": {"patterns": _patterns(cfg), "n_files": len(files),
                    "first": files[0].name, "last": files[-1].name},
        "config": {k: getattr(cfg, k) for k in ("exclude_tests", "max_bytes", "vocab_size",
                                                 "val_fraction", "token_dtype", "seed")},
    }
    storage.write_bytes_atomic(f"{root}/meta.json", json.dumps(meta, indent=2).encode())
    log(f"data: wrote {root} in {time.perf_counter() - t0:.1f} s: {train_ids.size:,} train / "
        f"{val_ids.size:,} val tokens ({dtype})")
    return _entry(root, key, meta)
