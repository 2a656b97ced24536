"""One large text file (a novel, a dump) is a corpus by default: cut into documents at blank lines,
or into fixed-size pieces where there are none, saying so in one line; the documents joined are
the file. Small corpora evaluate on what they have."""

from __future__ import annotations

import numpy as np
import pytest

import llm_ray.data.sources as sources
from llm_ray.core.config import DataConfig
from llm_ray.data import EOT, load_split, load_tokenizer, prepare_data

WORDS = "the whale ship sea captain harpoon deck sail ocean night storm crew voyage".split()


def novel(n_paragraphs: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    paras = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) + "." for _ in range(n_paragraphs)]
    return "\n\n".join(paras) + "\n"


def cfg_for(path, **kw) -> DataConfig:
    return DataConfig(**{"sources": [str(path)], "vocab_size": 300, "max_bytes": None, **kw})


def documents(data, split):
    tok = load_tokenizer(data.tokenizer_path)
    ids = np.asarray(load_split(data, split))
    cuts = np.flatnonzero(ids == tok.token_to_id(EOT))
    return [tok.decode(p[:-1].tolist()) for p in np.split(ids, cuts + 1)[:-1]]


def test_one_large_text_file_is_cut_at_blank_lines_and_prepares_with_no_extra_overrides(tmp_path):
    book = tmp_path / "novel.txt"
    text = novel(3000)
    book.write_text(text)
    logs = []
    data = prepare_data(cfg_for(book, large_file_bytes=500_000, document_bytes=20_000), str(tmp_path / "c"),
                        log=logs.append)
    said = [m for m in logs if "cut into documents" in m]
    assert len(said) == 1 and "novel.txt" in said[0] and "only file" in said[0], logs
    assert data.n_val_docs >= 1 and data.n_train_docs >= 20
    f = sources.cut_large_files(sources.list_sources(cfg_for(book)), cfg_for(book, document_bytes=20_000),
                                lambda m: None)[0]
    docs = [t for _, t in sources.file_documents(f, sources.ReadOptions())]
    assert "".join(docs) == text  # nothing lost, nothing added
    assert all(d.endswith("\n\n") and 20_000 <= len(d) < 40_000 for d in docs[:-1])
    assert sorted(documents(data, "train") + documents(data, "val")) == sorted(docs)


def test_a_file_without_blank_lines_is_cut_into_fixed_size_pieces_the_same_in_any_chunking(tmp_path):
    dump = tmp_path / "dump.txt"
    text = "naïve café 数据 ✓ " * 20_000  # no blank line at all, multi-byte characters
    dump.write_text(text)
    f = sources.SourceFile(str(dump), str(dump), dump.stat().st_size, "", "text", cut_bytes=5_000)
    whole = list(sources.file_documents(f, sources.ReadOptions()))
    assert [len(t) for _, t in whole[:-1]] == [10_000] * (len(whole) - 1)
    assert "".join(t for _, t in whole) == text
    old = sources._READ_CHUNK
    try:
        sources._READ_CHUNK = 997  # chunk boundaries inside multi-byte characters
        assert list(sources.file_documents(f, sources.ReadOptions())) == whole
    finally:
        sources._READ_CHUNK = old
    assert [i for i, _ in whole] == [f"{dump}#{k}" for k in range(len(whole))]


def test_only_large_files_of_a_many_file_corpus_are_cut_and_null_keeps_one_document_per_file():
    files = [sources.SourceFile(f"/c/{n}", f"/c/{n}", size, "", fmt)
             for n, size, fmt in [("a.txt", 10_000, "text"), ("big.txt", 3_000_000, "text"),
                                  ("big.jsonl", 3_000_000, "jsonl")]]
    logs = []
    out = sources.cut_large_files(files, DataConfig(), logs.append)
    assert [f.cut_bytes for f in out] == [None, 65_536, None] and len(logs) == 1
    assert sources.cut_large_files(files, DataConfig(large_file_bytes=None), logs.append) == files
    assert sources.cut_large_files(files, DataConfig(delimiter=r"\n\n"), logs.append) == files
    small = [sources.SourceFile("/c/s.txt", "/c/s.txt", 40_000, "", "text")]  # alone: >= 16 documents
    assert sources.cut_large_files(small, DataConfig(), logs.append)[0].cut_bytes == 2_500


def test_bad_cut_settings_name_the_field():
    with pytest.raises(ValueError, match="data.large_file_bytes=0"):
        DataConfig(large_file_bytes=0)
    with pytest.raises(ValueError, match="data.document_bytes=0"):
        DataConfig(document_bytes=0)
