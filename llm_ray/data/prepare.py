"""Corpus -> byte-level BPE tokenizer -> token shards, once per content (the driver's side).

`prepare_data` lists the files named by `DataConfig.sources` (fsspec paths, globs, directories, or
the word `stdlib`: this machine's Python standard-library sources, real text that needs no
download), groups them into pieces (`llm_ray.data.sources`), and writes

    <cache_dir>/<key>/tokenizer.json        trained on a bounded sample of train documents
    <cache_dir>/<key>/{train,val}/*.bin     token shards (llm_ray.data.encode), one task per piece
    <cache_dir>/<key>/pieces/*.json         one per piece, written after its shards
    <cache_dir>/<key>/manifest.json         written last: the entry is complete

where `key` hashes the source files' (name, size, mtime/ETag), every DataConfig field that changes
the output and `FORMAT_VERSION`. An entry without manifest.json is an interrupted preparation: it
is never read; the next run with the same key resumes it (keeping its tokenizer and every finished
piece) or, when nothing usable was left, rebuilds it, and says which. The pieces run in this
process for a small corpus and as Ray Data tasks across the cluster for a large one
(`data.ray_min_bytes`); either way the driver holds one piece's record at a time, never the corpus.

No torch here; Ray only inside `llm_ray.data.pipeline`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Optional

import fsspec
import numpy as np
import tokenizers
from fsspec.implementations.local import LocalFileSystem
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_ray.core.secrets import redact_text, secret_values
from llm_ray.data.encode import EOT, SPLITS, encode_piece, index_piece_lines, marker_path, sample_piece, utf8_len
from llm_ray.data.overlap import (MIN_CHARS, SAMPLE, earlier_lines, earlier_path, from_npy, lines_in_train,
                                  overlap_words, to_npy)
from llm_ray.data.pipeline import run_pieces
from llm_ray.data.sources import (CorpusError, Piece, ReadOptions, SourceFile, cut_large_files, list_sources,
                                  patterns, plan_pieces, select, split_overrides)
from llm_ray.io import storage

FORMAT_VERSION = 2
"""Bump when the on-disk layout or the tokenization recipe changes: old cache entries are ignored.
2: sharded splits, a manifest, EOT after every document, a tokenizer trained on a bounded sample."""
_PROGRESS_EVERY_S = 10.0
# DataConfig fields that change what an entry holds (the executor, data.ray_min_bytes, does not).
_KEY_FIELDS = ("exclude_tests", "max_bytes", "text_field", "delimiter", "invalid_utf8", "vocab_size",
               "tokenizer_sample_bytes", "val_fraction", "task_bytes", "shard_tokens", "seed")


@dataclass(frozen=True)
class PreparedData:
    """A complete cache entry: where its files are and what they hold (passed to Ray workers)."""

    root: str
    key: str
    tokenizer_path: str
    manifest_path: str
    dtype: str
    vocab_size: int
    n_train_tokens: int
    n_val_tokens: int
    n_train_docs: int
    n_val_docs: int
    val_lines_in_train: Optional[float] = None
    """Share of the validation split's long lines the training split also holds (llm_ray.data.overlap);
    None for an entry prepared before it was measured."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreparedData":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class _Entry:
    """Where an entry lives: its URL (plain path when local), filesystem and path on it."""

    root: str
    key: str
    fs: Any
    path: str

    def url(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def listing(self) -> dict[str, int]:
        """Relative path -> size of every file in the entry (one listing, not one request per file)."""
        if not self.fs.exists(self.path):
            return {}
        found = self.fs.find(self.path, detail=True)
        return {p[len(self.path.rstrip("/")) + 1:]: int(i.get("size") or 0) for p, i in found.items()
                if i.get("type", "file") == "file"}


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

def _resolve_dtype(cfg) -> str:
    if cfg.token_dtype == "auto":
        return "uint16" if cfg.vocab_size <= 65536 else "uint32"
    return cfg.token_dtype


def _train_tokenizer(texts: list[str], vocab_size: int, sample_bytes: int) -> Tokenizer:
    """GPT-2 style byte-level BPE: any text encodes (no unknown token) and decodes back exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer, length=len(texts))
    if tok.get_vocab_size() != vocab_size:
        raise CorpusError(
            f"data.vocab_size={vocab_size}: BPE found only {tok.get_vocab_size()} tokens in the "
            f"tokenizer sample ({len(texts)} train documents, {sample_bytes / 1e6:.1f} MB; the text "
            f"is too small for that many merges). Lower data.vocab_size to at most "
            f"{tok.get_vocab_size()}, or add text (data.sources, data.max_bytes, "
            f"data.tokenizer_sample_bytes).")
    return tok


def given_tokenizer(url: str) -> Tokenizer:
    """A tokenizer.json of your own (HF `tokenizers` format; any fsspec URL; nothing downloaded),
    with <|endoftext|> added as a special token when it has none (it ends every document)."""
    try:
        with fsspec.open(url, "rb") as f:
            tok = Tokenizer.from_str(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"data.tokenizer={url!r} does not exist: give the path or URL of a tokenizer.json "
                         f"(HF tokenizers format).") from None
    except Exception as err:  # noqa: BLE001 - tokenizers raises its own exception type for a bad file
        raise ValueError(f"data.tokenizer={url!r} is not a tokenizer.json the `tokenizers` library reads "
                         f"({str(err).splitlines()[0][:200]}).") from None
    if tok.token_to_id(EOT) is None:
        tok.add_special_tokens([EOT])
    return tok


def _sample_and_train(cfg, pieces: list[Piece], opts: ReadOptions, run,
                      log, given: Optional[Tokenizer] = None) -> tuple[Tokenizer, ReadOptions, dict]:
    """Every piece's first train documents (an equal share of data.tokenizer_sample_bytes each),
    in piece order, then the BPE trained on them. Fails early on an empty corpus; keeps a small
    corpus's splits non-empty (the options returned carry that for the encoding)."""
    kwargs = {"opts": opts, "budget": math.ceil(cfg.tokenizer_sample_bytes / len(pieces))}
    t0 = time.perf_counter()
    results = sorted(run(sample_piece, kwargs, pieces), key=lambda r: r["piece"])
    seen = {s: sum(r["docs"][s] for r in results) for s in SPLITS}
    complete = all(r["complete"] for r in results)
    _check_documents(seen, complete, cfg)
    overrides = _overrides(results, seen, cfg, log) if complete else ()
    if overrides:  # read the (small) corpus again with the document moved
        opts = replace(opts, overrides=overrides)
        results = sorted(run(sample_piece, {**kwargs, "opts": opts}, pieces), key=lambda r: r["piece"])
    texts = [t for r in results for t in r["texts"]]
    n_bytes = sum(utf8_len(t) for t in texts)
    t1 = time.perf_counter()
    tok = given or _train_tokenizer(texts, cfg.vocab_size, n_bytes)
    info = {"sample_docs": len(texts), "sample_bytes": n_bytes, "whole_train_split": complete,
            "sample_s": round(t1 - t0, 2), "bpe_s": round(time.perf_counter() - t1, 2)}
    return tok, opts, info


def _overrides(results: list[dict], seen: dict, cfg, log) -> tuple:
    """The split's overrides for a corpus the sample read whole (see sources.split_overrides)."""
    overrides = split_overrides(seen["train"] + seen["val"], seen["val"],
                                min(tuple(r["lowest"]) for r in results),
                                max(tuple(r["highest"]) for r in results))
    for doc, val in overrides:
        log(f"data: no document fell in the {'val' if val else 'train'} split "
            f"(data.val_fraction={cfg.val_fraction}); {doc} goes there, so neither is empty")
    return overrides


def _check_documents(docs: dict, complete: bool, cfg) -> None:
    """An empty corpus or split is the user's to fix (known early when the sample read it all)."""
    if docs["train"] + docs["val"] == 0:
        raise CorpusError(
            f"data.sources: no documents in {patterns(cfg)} after filtering (empty files, empty "
            f"texts{', data.max_bytes' if cfg.max_bytes else ''}): point data.sources at text.")
    if not complete:
        return
    if docs["train"] + docs["val"] < 2:
        raise CorpusError(
            f"data.sources: found {docs['train'] + docs['val']} document; the train/val split is by "
            f"document and needs at least 2. Add files, or split a file into documents with "
            f"data.delimiter (e.g. '\\n\\s*\\n' for blank lines) or a smaller data.document_bytes.")


def _check_splits(docs: dict, cfg) -> None:
    """After encoding a corpus too large to be sampled whole (its splits were not clipped)."""
    for split, other in (("val", "train"), ("train", "val")):
        if docs[split] == 0:
            raise CorpusError(
                f"data.val_fraction={cfg.val_fraction}: all {docs[other]} documents fell in the "
                f"{other} split and none in {split}. Use more, smaller documents (data.delimiter) "
                f"or change data.val_fraction or data.seed.")


# --------------------------------------------------------------------------------------------
# Cache entry
# --------------------------------------------------------------------------------------------

def _cache_key(cfg, files: list[SourceFile], dtype: str, given: Optional[Tokenizer] = None) -> str:
    mine = {"tokenizer": hashlib.sha256(given.to_str().encode()).hexdigest()} if given else {}
    blob = json.dumps({**mine,
        "format": FORMAT_VERSION, "tokenizers": tokenizers.__version__,
        "files": [(f.name, f.size, f.stamp, *([f.cut_bytes] if f.cut_bytes else [])) for f in files],
        "dtype": dtype,
        **{k: getattr(cfg, k) for k in _KEY_FIELDS},
        **({"dedup_lines": True} if cfg.dedup_lines else {}),  # off: the keys entries had before it existed
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _entry_for(cache_dir: str, key: str) -> _Entry:
    if "://" not in cache_dir:
        cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    root = f"{cache_dir.rstrip('/')}/{key}"
    fs, path = fsspec.core.url_to_fs(root)
    return _Entry(path if isinstance(fs, LocalFileSystem) else root, key, fs, path)


def _from_manifest(entry: _Entry, m: dict) -> PreparedData:
    return PreparedData(
        root=entry.root, key=entry.key, tokenizer_path=entry.url("tokenizer.json"),
        manifest_path=entry.url("manifest.json"), dtype=m["dtype"], vocab_size=m["vocab_size"],
        n_train_tokens=m["splits"]["train"]["tokens"], n_val_tokens=m["splits"]["val"]["tokens"],
        n_train_docs=m["splits"]["train"]["docs"], n_val_docs=m["splits"]["val"]["docs"],
        val_lines_in_train=(m.get("val_overlap") or {}).get("lines_in_train"))


def _shards_intact(listing: dict[str, int], splits: dict, itemsize: int) -> bool:
    return all(listing.get(s["path"]) == s["tokens"] * itemsize
               for split in splits.values() for s in split["shards"])


def _cached(entry: _Entry) -> Optional[PreparedData]:
    """The entry if its manifest exists and every shard it lists has the size it records."""
    listing = entry.listing()
    if "manifest.json" not in listing or "tokenizer.json" not in listing:
        return None
    try:
        m = json.loads(entry.fs.cat_file(f"{entry.path}/manifest.json"))
        if m.get("format") != FORMAT_VERSION or not _shards_intact(listing, m["splits"],
                                                                   np.dtype(m["dtype"]).itemsize):
            return None
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return _from_manifest(entry, m)


@dataclass
class _Earlier:
    """What an interrupted run left in an entry: its tokenizer and its finished, intact pieces."""

    tokenizer_json: Optional[str]
    done: dict
    n_files: int
    stale_manifest: bool
    overrides: tuple = ()

    def describe(self, root: str, n_pieces: int, where: str) -> str:
        if self.tokenizer_json is None:
            verb = (f"rebuilding {root} (an interrupted run left {self.n_files} files but no "
                    f"tokenizer)" if self.n_files else f"building {root}")
            return f"{verb}: {n_pieces} piece{'s' * (n_pieces != 1)}, in {where}"
        why = " (its manifest no longer matched its shards)" if self.stale_manifest else ""
        return (f"resuming {root}{why}: {len(self.done)} of {n_pieces} pieces finished by an "
                f"interrupted run kept, with its tokenizer; encoding {n_pieces - len(self.done)} "
                f"in {where}")


def _earlier_attempt(entry: _Entry, pieces: list[Piece], itemsize: int) -> _Earlier:
    """Finished pieces whose shards are intact, and the tokenizer they were encoded with (none:
    nothing can be kept, the entry is rebuilt)."""
    listing = entry.listing()
    stale = "manifest.json" in listing
    if stale:  # a manifest whose shards no longer match is not valid any more
        entry.fs.rm_file(f"{entry.path}/manifest.json")
    if "tokenizer.json" not in listing or "split.json" not in listing:
        return _Earlier(None, {}, len(listing), stale)
    tokenizer_json = entry.fs.cat_file(f"{entry.path}/tokenizer.json").decode()
    overrides = tuple(map(tuple, json.loads(entry.fs.cat_file(f"{entry.path}/split.json"))["overrides"]))
    names = [marker_path(p.index) for p in pieces if marker_path(p.index) in listing]
    blobs = entry.fs.cat([f"{entry.path}/{n}" for n in names]) if names else {}
    done = {}
    for blob in blobs.values():
        record = json.loads(blob)
        if _shards_intact(listing, record["splits"], itemsize):
            done[record["piece"]] = record
    return _Earlier(tokenizer_json, done, len(listing), stale, overrides)


def _log_selection(cfg, kept: list[SourceFile], left: list[SourceFile], log) -> None:
    n_bytes = sum(f.size for f in kept)
    formats = sorted({f.format + (f".{f.compression}" if f.compression else "") for f in kept})
    log(f"data: {len(kept)} files ({n_bytes / 1e6:.1f} MB, {', '.join(formats)}) from {patterns(cfg)}")
    if left:
        log(f"data: data.max_bytes={cfg.max_bytes:,} left out {len(left)} of {len(kept) + len(left)} "
            f"files ({sum(f.size for f in left) / 1e6:.1f} MB, from {left[0].name}); "
            f"data.max_bytes=null reads them all")


# --------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------

class _Progress:
    """Documents, bytes and tokens done, throughput and ETA, logged every few seconds."""

    def __init__(self, pieces: list[Piece], done: dict, log):
        self.total_stored = sum(p.stored_bytes for p in pieces)
        self.n_pieces, self.log = len(pieces), log
        self.stored = self.docs = self.text = self.tokens = 0
        self.pieces, self.todo_stored = 0, sum(p.stored_bytes for p in pieces if p.index not in done)
        self.t0 = self.last = time.perf_counter()

    def update(self, record: dict) -> None:
        self.pieces += 1
        self.stored += record["stored_bytes"]
        for s in record["splits"].values():
            self.docs += s["docs"]
            self.text += s["text_bytes"]
            self.tokens += s["tokens"]
        now = time.perf_counter()
        if now - self.last >= _PROGRESS_EVERY_S or self.stored == self.todo_stored:
            self.last = now
            self.log(self.line(now - self.t0))

    def line(self, dt: float) -> str:
        rate = self.stored / max(dt, 1e-9)
        eta = (self.todo_stored - self.stored) / rate if rate else float("inf")
        return (f"data: encoded {self.pieces}/{self.n_pieces} pieces: {self.docs:,} documents, "
                f"{self.text / 1e6:,.1f} MB of text, {self.tokens:,} tokens in {dt:.1f} s "
                f"({self.text / 1e6 / max(dt, 1e-9):.1f} MB/s), ETA {eta:.0f} s")


def _encode_all(entry: _Entry, pieces: list[Piece], done: dict, kwargs: dict, run, log) -> list[dict]:
    todo = [p for p in pieces if p.index not in done]
    progress = _Progress(pieces, done, log)
    records = dict(done)
    for record in run(encode_piece, {**kwargs, "root": entry.root}, todo):
        records[record["piece"]] = record
        progress.update(record)
    return [records[p.index] for p in pieces]


def _manifest(cfg, entry: _Entry, tok: Tokenizer, dtype: str, records: list[dict], files: list[SourceFile],
              info: dict) -> dict:
    splits = {}
    for s in SPLITS:
        shards = [x for r in records for x in r["splits"][s]["shards"]]
        splits[s] = {"docs": sum(r["splits"][s]["docs"] for r in records),
                     "text_bytes": sum(r["splits"][s]["text_bytes"] for r in records),
                     "tokens": sum(x["tokens"] for x in shards), "shards": shards}
    _check_splits({s: splits[s]["docs"] for s in SPLITS}, cfg)
    return {
        "format": FORMAT_VERSION, "key": entry.key, "dtype": dtype, "vocab_size": tok.get_vocab_size(),
        "eot_id": tok.token_to_id(EOT), "tokenizers": tokenizers.__version__, "splits": splits,
        "n_bytes": sum(f.size for f in files),
        "sources": {"patterns": patterns(cfg), "n_files": len(files), "first": files[0].name,
                    "last": files[-1].name},
        "pieces": [{"piece": r["piece"], "files": r["files"], "stored_bytes": r["stored_bytes"],
                    "node": r.get("node"), "seconds": r["seconds"]} for r in records],
        "config": {k: getattr(cfg, k) for k in (*_KEY_FIELDS, "token_dtype")},
        "build": info,
    }


def _read_hashes(entry: _Entry, rel: str):
    """A .npy of line hashes (llm_ray.data.overlap) the entry holds at `rel`."""
    fs, path = storage.fs_and_path(entry.url(rel))
    return from_npy(fs.cat_file(path))


def _dedup_pass(entry: _Entry, pieces: list[Piece], opts: ReadOptions, run, log, info: dict) -> ReadOptions:
    """data.dedup_lines: every piece's long-line hashes (a task each), then per piece the ones an earlier
    piece holds (`dedup/<piece>.npy`, what its readers drop), so each line is kept where it first occurs.
    Kept from an interrupted attempt when every piece's file is there (they are written before the
    tokenizer, and the tokenizer was trained on the deduplicated text)."""
    listing = entry.listing()
    if all(earlier_path("", p.index).lstrip("/") in listing for p in pieces):
        return replace(opts, dedup_root=entry.root)
    t0 = time.perf_counter()
    records = sorted(run(index_piece_lines, {"opts": opts, "root": entry.root}, pieces), key=lambda r: r["piece"])
    hashes = [_read_hashes(entry, r["path"]) for r in records]
    for r, drop in zip(records, earlier_lines(hashes)):
        storage.write_bytes_atomic(earlier_path(entry.root, r["piece"]), to_npy(drop.tolist()))
    total = sum(len(h) for h in hashes)
    dropped = total - len(np.unique(np.concatenate(hashes))) if total else 0
    info["dedup_lines"] = {"long_lines": int(total), "dropped": int(dropped),
                           "seconds": round(time.perf_counter() - t0, 2)}
    log(f"data: dedup_lines: {dropped:,} of {total:,} lines of >= {MIN_CHARS} characters repeat an earlier one "
        f"({100 * dropped / max(total, 1):.1f}%) and are left out")
    return replace(opts, dedup_root=entry.root)


def _val_overlap(entry: _Entry, records: list[dict]) -> dict:
    """The manifest's `val_overlap` (llm_ray.data.overlap) from every piece's sampled line hashes; {}
    when a piece was encoded before they were written (a resumed older entry)."""
    if any("lines" not in r["splits"][s] for r in records for s in SPLITS):
        return {}

    def hashes(split: str):
        return (_read_hashes(entry, r["splits"][split]["lines"]) for r in records)

    share, counted = lines_in_train(hashes("train"), hashes("val"))
    return {"lines_in_train": share, "val_lines_counted": counted, "min_chars": MIN_CHARS, "sample": SAMPLE}


def _runner(use_ray: bool, start_ray):
    return lambda fn, kwargs, pieces: run_pieces(fn, pieces, kwargs, use_ray=use_ray, start_ray=start_ray)


def redacting(log: Callable[[str], Any]) -> Callable[[str], Any]:
    """`log` with credentials masked (a source URL's userinfo, the environment's secrets)."""
    secrets = secret_values(os.environ)
    return lambda message, *a, **k: log(redact_text(str(message), secrets), *a, **k)


def prepare_data(cfg, cache_dir: str, log: Callable[[str], Any] = print,
                 start_ray: Optional[Callable[[], None]] = None) -> PreparedData:
    """Build (or find, or finish) the cache entry for `cfg` under `cache_dir` (path or fsspec URL).

    Idempotent: a hit costs a listing of the sources and of the entry. `start_ray` starts Ray when
    a large corpus needs Ray Data and none is running (default: `ray.init()`). Concurrent callers
    with the same key may both build; they write identical files, each moved into place atomically.
    """
    t0 = time.perf_counter()
    log = redacting(log)
    given = given_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    if given is not None:  # its vocabulary, not data.vocab_size's BPE (the model takes it: launch.with_data_vocab)
        cfg = replace(cfg, vocab_size=given.get_vocab_size())
    dtype = _resolve_dtype(cfg)
    files, left = select(list_sources(cfg), cfg.max_bytes)
    _log_selection(cfg, files, left, log)
    files = cut_large_files(files, cfg, log)
    if not files:
        _check_documents({"train": 0, "val": 0}, True, cfg)
    entry = _entry_for(cache_dir, _cache_key(cfg, files, dtype, given))
    hit = _cached(entry)
    if hit is not None:
        log(f"data: cache hit {entry.root} ({hit.n_train_tokens:,} train / {hit.n_val_tokens:,} val "
            f"tokens, {time.perf_counter() - t0:.2f} s)")
        return hit

    pieces = plan_pieces(files, cfg.task_bytes)
    n_bytes = sum(f.size for f in files)
    use_ray = n_bytes >= cfg.ray_min_bytes
    earlier = _earlier_attempt(entry, pieces, np.dtype(dtype).itemsize)
    where = ("Ray Data tasks across the cluster" if use_ray else
             f"this process ({n_bytes / 1e6:.1f} MB < data.ray_min_bytes={cfg.ray_min_bytes / 1e6:g} MB)")
    log(f"data: {earlier.describe(entry.root, len(pieces), where)}")
    info = {"executor": "ray_data" if use_ray else "driver", "resumed_pieces": len(earlier.done)}
    return _build(cfg, entry, pieces, files, dtype, earlier, info, _runner(use_ray, start_ray), log, t0, given)


def _build(cfg, entry: _Entry, pieces: list[Piece], files: list[SourceFile], dtype: str,
           earlier: _Earlier, info: dict, run, log, t0: float, given: Optional[Tokenizer] = None) -> PreparedData:
    """Tokenizer (unless an interrupted run left one), the pieces not done yet, then the manifest."""
    opts = replace(ReadOptions.of(cfg), overrides=earlier.overrides)
    tokenizer_json = earlier.tokenizer_json
    if cfg.dedup_lines:
        opts = _dedup_pass(entry, pieces, opts, run, log, info)
    if tokenizer_json is None:
        tok, opts, sample = _sample_and_train(cfg, pieces, opts, run, log, given)
        info.update(sample)
        if given is not None:
            log(f"data: tokenizer {cfg.tokenizer} (vocab {cfg.vocab_size}), not trained")
        else:
            log(f"data: BPE (vocab {cfg.vocab_size}) trained in {sample['bpe_s']:.1f} s on "
                f"{sample['sample_docs']:,} train documents ({sample['sample_bytes'] / 1e6:.1f} MB"
                f"{', every train document' if sample['whole_train_split'] else ', a sample'})")
        tokenizer_json = tok.to_str()
        # The split's overrides first: an entry with a tokenizer has them (see _earlier_attempt).
        storage.write_json(entry.url("split.json"), {"overrides": list(opts.overrides)})
        storage.write_bytes_atomic(entry.url("tokenizer.json"), tokenizer_json.encode())
    tok = Tokenizer.from_str(tokenizer_json)
    t1 = time.perf_counter()
    kwargs = {"opts": opts, "tokenizer_json": tokenizer_json, "dtype": dtype,
              "shard_tokens": cfg.shard_tokens}
    records = _encode_all(entry, pieces, earlier.done, kwargs, run, log)
    info.update(encode_s=round(time.perf_counter() - t1, 2), total_s=round(time.perf_counter() - t0, 2),
                nodes=sorted({r.get("node") for r in records if r.get("node")}))
    manifest = {**_manifest(cfg, entry, tok, dtype, records, files, info), "val_overlap": _val_overlap(entry, records)}
    storage.write_json(entry.url("manifest.json"), manifest)
    data = _from_manifest(entry, manifest)
    log(f"data: wrote {entry.root} in {time.perf_counter() - t0:.1f} s: {data.n_train_tokens:,} train / "
        f"{data.n_val_tokens:,} val tokens ({dtype}, {data.n_train_docs + data.n_val_docs:,} documents)")
    log(f"data: {overlap_words(data.val_lines_in_train)}")
    return data
