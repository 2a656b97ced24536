"""Corpus formats and bad input: text (whole or delimited), JSON Lines (plain, .gz, .zst), Parquet.

Each format yields the same documents; each kind of bad input is a ValueError naming the file, the
place in it and the fix, raised before training, with no entry left that reads as complete.
Prepared in the test's own process (small corpora never start Ray Data).
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_ray.core.config import DataConfig
from llm_ray.data import EOT, TokenStream, load_split, load_tokenizer, prepare_data, sample_batch

WORDS = ("river stone lantern harbor meadow orchard violet copper winter signal ledger thunder "
         "compass garden canyon ribbon marble falcon").split()


def make_doc(i: int) -> str:
    rng = np.random.default_rng(100 + i)
    lines = [f"Record {i}: " + " ".join(rng.choice(WORDS, size=10)) + "." for _ in range(12)]
    return "\n".join(lines) + " ünïcödé ✓"


DOCS = [make_doc(i) for i in range(40)]


def zstd(data: bytes) -> bytes:
    return pa.Codec("zstd").compress(data, asbytes=True)


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def cfg_for(*sources, **kw) -> DataConfig:
    return DataConfig(**{"sources": [str(s) for s in sources], "vocab_size": 300, "val_fraction": 0.2,
                         **kw})


def prepare(cfg, cache, logs=None):
    logs = [] if logs is None else logs
    return prepare_data(cfg, str(cache), log=logs.append), logs


def all_docs(data) -> list[str]:
    tok = load_tokenizer(data.tokenizer_path)
    out = []
    for split in ("train", "val"):
        ids = np.asarray(load_split(data, split))
        cuts = np.flatnonzero(ids == tok.token_to_id(EOT))
        out += [tok.decode(p[:-1].tolist()) for p in np.split(ids, cuts + 1)[:-1]]
    return sorted(out)


def no_complete_entry(cache) -> bool:
    return not list(cache.rglob("manifest.json")) if cache.exists() else True


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------

def test_every_format_yields_the_same_documents(tmp_path):
    half = len(DOCS) // 2
    d = tmp_path / "formats"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jsonl({"text": t, "id": i} for i, t in enumerate(DOCS[:half])))
    (d / "b.jsonl.gz").write_bytes(gzip.compress(jsonl({"text": t} for t in DOCS[half:])))
    (d / "c.jsonl.zst").write_bytes(zstd(jsonl({"text": t} for t in DOCS)))
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), d / "d.parquet",
                   row_group_size=7)
    (d / "e.txt").write_text("\n\n\n".join(DOCS), encoding="utf-8")
    cache = tmp_path / "cache"
    for sources, kw in ((["a.jsonl", "b.jsonl.gz"], {}), (["c.jsonl.zst"], {}), (["d.parquet"], {}),
                        (["e.txt"], {"delimiter": r"\n\s*\n"})):
        data, logs = prepare(cfg_for(*(d / s for s in sources), **kw), cache)
        assert all_docs(data) == sorted(DOCS), sources
        assert data.n_train_docs + data.n_val_docs == len(DOCS)
    # One corpus of mixed formats: the format is told by each file's extension.
    data, logs = prepare(cfg_for(d / "*.*", delimiter=r"\n\s*\n"), cache)
    assert all_docs(data) == sorted(DOCS * 4)  # a+b, c, d and e each hold them all
    assert any("jsonl, jsonl.gzip, jsonl.zstd, parquet, text" in m for m in logs), logs


def test_local_file_names_with_double_colons_are_read_as_files(tmp_path):
    # Debian's Perl man pages are named like Algorithm::Diff.3pm; fsspec reads `::` as a URL chain.
    d = tmp_path / "man"
    d.mkdir()
    for i, t in enumerate(DOCS):
        (d / f"Text::Module{i}.3pm.txt").write_text(t, encoding="utf-8")
    data, _ = prepare(cfg_for(d / "*.txt"), tmp_path / "cache")
    assert all_docs(data) == sorted(DOCS)


def test_text_field_names_the_field_or_column(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl({"content": t, "text": 1} for t in DOCS[:10]))
    pq.write_table(pa.table({"content": DOCS[10:20]}), tmp_path / "b.parquet")
    data, _ = prepare(cfg_for(tmp_path / "a.jsonl", tmp_path / "b.parquet", text_field="content"),
                      tmp_path / "cache")
    assert all_docs(data) == sorted(DOCS[:20])


def test_delimiter_splits_one_large_file_into_stable_documents(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(DOCS) + "\n\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"found 1 document.*data\.delimiter"):
        prepare(cfg_for(book, large_file_bytes=None), tmp_path / "cache")  # one file, one document
    data, _ = prepare(cfg_for(book, delimiter=r"\n\s*\n"), tmp_path / "cache")
    assert all_docs(data) == sorted(DOCS)
    # A delimiter cut by the reader's chunk boundary is still found (8 MiB chunks).
    import llm_ray.data.sources as sources

    f = sources.SourceFile(str(book), str(book), book.stat().st_size, "", "text")
    whole = list(sources.file_documents(f, sources.ReadOptions(delimiter=r"\n\s*\n")))
    old = sources._READ_CHUNK
    try:
        sources._READ_CHUNK = 37  # many boundaries, some inside the delimiter and in multi-byte characters
        chunked = list(sources.file_documents(f, sources.ReadOptions(delimiter=r"\n\s*\n")))
    finally:
        sources._READ_CHUNK = old
    assert chunked == whole and [t for _, t in whole] == DOCS
    assert [i for i, _ in whole] == [f"{book}#{k}" for k in range(len(DOCS))]


def test_shards_have_a_fixed_size_and_batches_do_not_depend_on_the_shard_size(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl({"text": t} for t in DOCS * 4))
    big, _ = prepare(cfg_for(tmp_path / "a.jsonl"), tmp_path / "cache")
    small, _ = prepare(cfg_for(tmp_path / "a.jsonl", shard_tokens=1000), tmp_path / "cache")
    m = json.loads(open(small.manifest_path).read())
    sizes = [s["tokens"] for s in m["splits"]["train"]["shards"]]
    assert len(sizes) > 5 and set(sizes[:-1]) == {1000} and 0 < sizes[-1] <= 1000
    a, b = load_split(big, "train"), load_split(small, "train")
    assert len(a.parts) == 1 and len(b.parts) == len(sizes)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    for step in range(5):  # windows across shard boundaries included
        xa, _ = sample_batch(a, 64, 16, seed=0, step=step, rank=1)
        xb, _ = sample_batch(b, 64, 16, seed=0, step=step, rank=1)
        assert np.array_equal(xa, xb)


def test_token_stream_indexes_like_the_concatenation():
    parts = [np.arange(0, 7, dtype=np.uint16), np.arange(7, 8, dtype=np.uint16),
             np.arange(8, 30, dtype=np.uint16)]
    stream, whole = TokenStream(parts), np.arange(30, dtype=np.uint16)
    idx = np.array([[0, 6, 7, 8], [29, 3, 7, 28]])
    assert len(stream) == 30 and np.array_equal(stream[idx], whole[idx])
    assert stream[idx].dtype == np.uint16 and np.array_equal(stream[5:12], whole[5:12])
    with pytest.raises(IndexError):
        stream[np.array([30])]


def test_tokenizer_sample_is_bounded_and_the_same_on_every_run(tmp_path):
    for i in range(8):
        (tmp_path / f"{i}.jsonl").write_bytes(jsonl({"text": t} for t in DOCS[5 * i:5 * i + 5]))
    cfg = cfg_for(tmp_path / "*.jsonl", tokenizer_sample_bytes=6_000, task_bytes=3_000)
    a, logs = prepare(cfg, tmp_path / "c1")
    b, _ = prepare(cfg, tmp_path / "c2")
    build = json.loads(open(a.manifest_path).read())["build"]
    assert 0 < build["sample_bytes"] <= 6_000 and not build["whole_train_split"]
    assert any("a sample" in m for m in logs)
    assert open(a.tokenizer_path).read() == open(b.tokenizer_path).read()
    whole, _ = prepare(cfg_for(tmp_path / "*.jsonl", task_bytes=3_000), tmp_path / "c1")
    assert json.loads(open(whole.manifest_path).read())["build"]["whole_train_split"]
    assert open(whole.tokenizer_path).read() != open(a.tokenizer_path).read()


def test_progress_reports_documents_bytes_tokens_throughput_and_eta(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl({"text": t} for t in DOCS))
    data, logs = prepare(cfg_for(tmp_path / "a.jsonl"), tmp_path / "cache")
    line = next(m for m in logs if m.startswith("data: encoded"))
    assert f"{len(DOCS):,} documents" in line and "MB of text" in line
    assert f"{data.n_train_tokens + data.n_val_tokens:,} tokens" in line
    assert "MB/s" in line and "ETA" in line


def test_a_byte_cap_is_explicit_and_stated(tmp_path):
    for i in range(10):
        (tmp_path / f"{i:02d}.txt").write_text(DOCS[i], encoding="utf-8")
    data, logs = prepare(cfg_for(tmp_path / "*.txt"), tmp_path / "cache")
    assert data.n_train_docs + data.n_val_docs == 10 and not any("left out" in m for m in logs)
    size = sum(os.path.getsize(tmp_path / f"{i:02d}.txt") for i in range(4))
    data, logs = prepare(cfg_for(tmp_path / "*.txt", max_bytes=size), tmp_path / "cache")
    assert data.n_train_docs + data.n_val_docs == 4
    assert any("data.max_bytes=" in m and "left out 6 of 10 files" in m and "09.txt" not in m
               for m in logs), logs


# --------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file and the fix; nothing left that reads as complete
# --------------------------------------------------------------------------------------------

def bad_input_cases(d):
    good = jsonl({"text": t} for t in DOCS)
    (d / "ok.jsonl").write_bytes(good)
    cases = {}

    (d / "nofield.jsonl").write_bytes(good + jsonl([{"body": "x"}]))
    cases["nofield.jsonl"] = (r"data\.text_field='text': line 41 of .*nofield\.jsonl has no such field "
                              r"\(its fields: \['body'\]\)", {})
    (d / "notstr.jsonl").write_bytes(good + jsonl([{"text": 7}]))
    cases["notstr.jsonl"] = (r"line 41 of .*notstr\.jsonl holds a int, not a string", {})
    (d / "null.jsonl").write_bytes(jsonl([{"text": None}]) + good)
    cases["null.jsonl"] = (r"line 1 of .*null\.jsonl holds null", {})
    (d / "badjson.jsonl").write_bytes(good + b'{"text": "cut off')
    cases["badjson.jsonl"] = (r"line 41 of .*badjson\.jsonl is not valid JSON", {})
    pq.write_table(pa.table({"body": DOCS}), d / "nocol.parquet")
    cases["nocol.parquet"] = (r"nocol\.parquet has no such column \(its columns: \['body'\]\)", {})
    pq.write_table(pa.table({"text": list(range(5))}), d / "intcol.parquet")
    cases["intcol.parquet"] = (r"column 'text' of .*intcol\.parquet is int64, not a string", {})
    pq.write_table(pa.table({"text": DOCS[:3] + [None]}), d / "nullrow.parquet")
    cases["nullrow.parquet"] = (r"row 3 of .*nullrow\.parquet is null", {})
    (d / "latin1.txt").write_bytes("Grüße aus Köln\n".encode("latin-1"))
    cases["latin1.txt"] = (r"latin1\.txt is not valid UTF-8 \(the file, byte 2 .*data\.invalid_utf8=replace", {})
    (d / "latin1.jsonl").write_bytes(good + '{"text": "Köln"}\n'.encode("latin-1"))
    cases["latin1.jsonl"] = (rf"latin1\.jsonl is not valid UTF-8 \(line 41, byte {len(good) + 11:,} of its content", {})
    (d / "book.txt").write_bytes("\n\n".join(DOCS[:5]).encode() + b"\n\n caf\xe9 \n\n" + DOCS[5].encode())
    cases["book.txt"] = (r"book\.txt is not valid UTF-8 \(delimited text, byte \d+", {"delimiter": r"\n\s*\n"})
    blob = gzip.compress(good)
    (d / "cut.jsonl.gz").write_bytes(blob[:len(blob) // 2])
    cases["cut.jsonl.gz"] = (r"cut\.jsonl\.gz is corrupt or not a gzip-compressed jsonl file", {})
    (d / "junk.jsonl.zst").write_bytes(b"this is not zstd at all" * 10)
    cases["junk.jsonl.zst"] = (r"junk\.jsonl\.zst is corrupt or not a zstd-compressed jsonl file", {})
    raw = open_parquet_bytes(d)
    (d / "cut.parquet").write_bytes(raw[: len(raw) // 2])
    cases["cut.parquet"] = (r"cut\.parquet is corrupt or not a parquet file", {})
    (d / "empty.jsonl").write_bytes(jsonl({"text": ""} for _ in range(5)))
    cases["empty.jsonl"] = (r"data\.sources: no documents in .*empty\.jsonl.* after filtering", {})
    return cases


def open_parquet_bytes(d) -> bytes:
    pq.write_table(pa.table({"text": DOCS}), d / "whole.parquet")
    return (d / "whole.parquet").read_bytes()


def test_each_bad_input_is_a_clear_error_and_leaves_nothing_complete(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    cases = bad_input_cases(d)
    cache = tmp_path / "cache"
    for name, (message, kw) in cases.items():
        sources = [d / name] + ([d / "ok.jsonl"] if name != "empty.jsonl" else [])
        with pytest.raises(ValueError, match=message):
            prepare(cfg_for(*sources, **kw), cache)
        assert no_complete_entry(cache), name
    # The policy for invalid UTF-8 is the user's: replaced with U+FFFD when asked.
    data, _ = prepare(cfg_for(d / "latin1.txt", d / "ok.jsonl", invalid_utf8="replace"), cache)
    assert "Gr\ufffd\ufffde aus K\ufffdln\n" in all_docs(data)


def test_the_stdlib_corpus_decodes_its_mis_encoded_test_files_by_replacement(tmp_path):
    from llm_ray.core.config import DataConfig
    from llm_ray.data.sources import ReadOptions, file_documents, list_sources

    stdlib = list_sources(DataConfig(sources=["stdlib"], exclude_tests=False))
    bad = [f for f in stdlib if f.name.endswith("module_iso_8859_1.py")]
    assert bad and all(f.replace_invalid_utf8 for f in bad)
    (_, text), = file_documents(bad[0], ReadOptions(invalid_utf8="error"))
    assert "\ufffd" in text
