"""Data pipeline: sources -> split -> BPE -> cached token shards -> deterministic batches.

Real tokenizers and fsspec throughout (local files, memory://, and this machine's stdlib).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid

import fsspec
import numpy as np
import pytest

from llm_ray.core.config import DataConfig
from llm_ray.data import (EOT, PreparedData, check_fits, load_tokenizer, load_tokens, prepare_data,
                          sample_batch, stdlib_text_files, val_windows)
from llm_ray.data.prepare import _split

WORDS = ("alpha beta gamma delta epsilon scaling law tokens compute optimal model data loss "
         "train validation batch window shard cache ray worker deepspeed zero stage").split()


def make_doc(i: int) -> str:
    """A few KB of varied text with a unique marker, so each document can be traced."""
    rng = np.random.default_rng(i)
    lines = [f"DOC-{i:03d} begins."]
    lines += [" ".join(rng.choice(WORDS, size=12)) + f" {int(rng.integers(1000))}." for _ in range(40)]
    lines.append("Unicode too: naïve café, 数据, ✓.")
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    texts = {}
    for i in range(24):
        p = d / f"doc{i:03d}.txt"
        texts[str(p)] = make_doc(i)
        p.write_text(texts[str(p)], encoding="utf-8")
    (d / "empty.txt").write_text("")  # empty files are not documents
    return d, texts


def cfg_for(pattern, **kw) -> DataConfig:
    return DataConfig(**{"sources": [str(pattern)], "vocab_size": 320, "val_fraction": 0.2,
                         "max_bytes": None, **kw})


def prepare(cfg, cache, logs=None):
    logs = [] if logs is None else logs
    return prepare_data(cfg, str(cache), log=logs.append), logs


def decode_docs(data: PreparedData, path: str, local_cache=None) -> list[str]:
    """The documents of a shard, cut at <|endoftext|>."""
    tok = load_tokenizer(data.tokenizer_path)
    ids = np.asarray(load_tokens(path, data.dtype, local_cache=local_cache))
    cuts = np.flatnonzero(ids == tok.token_to_id(EOT))
    return [tok.decode(part.tolist()) for part in np.split(ids, cuts)]


def entry_mtimes(data: PreparedData) -> dict:
    return {n: os.stat(os.path.join(data.root, n)).st_mtime_ns
            for n in ("tokenizer.json", "train.bin", "val.bin", "meta.json")}


# --------------------------------------------------------------------------------------------

def test_cache_is_keyed_by_content(corpus, tmp_path):
    d, _ = corpus
    cache = tmp_path / "cache"
    cfg = cfg_for(d / "*.txt")
    first, logs = prepare(cfg, cache)
    assert not any("cache hit" in m for m in logs)
    mtimes = entry_mtimes(first)

    again, logs = prepare(cfg, cache)
    assert again == first
    assert any("cache hit" in m for m in logs)
    assert not any("training" in m for m in logs)
    assert entry_mtimes(again) == mtimes

    # Same size, new content: the mtime alone must change the key.
    p = d / "doc005.txt"
    st = p.stat()
    p.write_text(make_doc(5).replace("begins", "BEGINS"), encoding="utf-8")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert p.stat().st_size == st.st_size
    edited, logs = prepare(cfg, cache)
    assert edited.key != first.key and not any("cache hit" in m for m in logs)

    bigger_vocab, _ = prepare(dataclasses.replace(cfg, vocab_size=330), cache)
    assert len({first.key, edited.key, bigger_vocab.key}) == 3
    assert bigger_vocab.vocab_size == 330
    assert sorted(os.listdir(cache)) == sorted([first.key, edited.key, bigger_vocab.key])


def test_split_is_by_document_deterministic_disjoint_and_non_empty(corpus, tmp_path):
    d, texts = corpus
    cfg = cfg_for(d / "*.txt")
    a, _ = prepare(cfg, tmp_path / "c1")
    b, _ = prepare(cfg, tmp_path / "c2")
    assert a.n_train_docs + a.n_val_docs == len(texts)
    assert a.n_train_docs > 0 and a.n_val_docs > 0
    assert open(a.val_path, "rb").read() == open(b.val_path, "rb").read()
    assert open(a.train_path, "rb").read() == open(b.train_path, "rb").read()

    train_docs, val_docs = decode_docs(a, a.train_path), decode_docs(a, a.val_path)
    assert sorted(train_docs + val_docs) == sorted(texts.values())  # whole documents, each once
    assert not set(train_docs) & set(val_docs)

    other_seed, _ = prepare(dataclasses.replace(cfg, seed=1), tmp_path / "c1")
    assert set(decode_docs(other_seed, other_seed.val_path)) != set(val_docs)


def test_split_rule_is_per_document_and_never_leaves_a_split_empty():
    names = [f"s3://bucket/corpus/{i}.txt" for i in range(400)]
    is_val = _split(names, seed=0, val_fraction=0.1)
    assert 20 < sum(is_val) < 60
    # A document's side depends only on (seed, its name): adding documents moves nobody.
    more = _split(names + [f"s3://bucket/extra/{i}.txt" for i in range(100)], 0, 0.1)
    assert more[:400] == is_val
    assert _split(names[:2], 0, 0.05).count(True) == 1
    assert _split(names[:3], 0, 0.45).count(False) >= 1
    with pytest.raises(ValueError, match="data.sources"):
        _split(names[:1], 0, 0.1)


def test_tokens_use_the_smallest_dtype_and_round_trip(corpus, tmp_path):
    d, texts = corpus
    cfg = cfg_for(d / "*.txt")
    small, _ = prepare(cfg, tmp_path / "cache")
    wide, _ = prepare(dataclasses.replace(cfg, token_dtype="uint32"), tmp_path / "cache")
    assert (small.dtype, wide.dtype) == ("uint16", "uint32")
    assert small.key != wide.key
    t16, t32 = load_tokens(small.train_path, "uint16"), load_tokens(wide.train_path, "uint32")
    assert (t16.dtype, t32.dtype) == (np.uint16, np.uint32)
    assert os.path.getsize(wide.train_path) == 4 * wide.n_train_tokens == 2 * os.path.getsize(small.train_path)
    assert np.array_equal(t16, t32) and int(t16.max()) < cfg.vocab_size
    assert not t16.flags.writeable

    tok = load_tokenizer(small.tokenizer_path)
    assert tok.get_vocab_size() == cfg.vocab_size
    doc = texts[str(d / "doc007.txt")]
    assert tok.decode(tok.encode(doc).ids) == doc


def test_vocab_larger_than_the_corpus_supports_asks_to_lower_it(corpus, tmp_path):
    d, _ = corpus
    with pytest.raises(ValueError, match=r"(?i)lower data\.vocab_size to at most (\d+)") as err:
        prepare(cfg_for(d / "*.txt", vocab_size=20000), tmp_path / "cache")
    suggested = int(err.value.args[0].split("at most ")[1].split()[0])
    data, _ = prepare(cfg_for(d / "*.txt", vocab_size=suggested), tmp_path / "cache")
    assert data.vocab_size == suggested


def test_crash_mid_prepare_is_not_a_hit_and_is_rebuilt(corpus, tmp_path):
    d, _ = corpus
    cfg = cfg_for(d / "*.txt")
    good, _ = prepare(cfg, tmp_path / "cache")
    reference = open(good.train_path, "rb").read()

    os.remove(os.path.join(good.root, "meta.json"))  # crashed before the completion marker
    with open(good.train_path, "r+b") as f:
        f.truncate(10)
    rebuilt, logs = prepare(cfg, tmp_path / "cache")
    assert not any("cache hit" in m for m in logs)
    assert rebuilt == good and open(rebuilt.train_path, "rb").read() == reference

    with open(good.val_path, "r+b") as f:  # shard lost after the marker: sizes disagree
        f.truncate(4)
    _, logs = prepare(cfg, tmp_path / "cache")
    assert not any("cache hit" in m for m in logs)
    assert os.path.getsize(good.val_path) == 2 * good.n_val_tokens
    assert not [n for n in os.listdir(good.root) if ".tmp-" in n]


def test_missing_sources_name_the_field_and_the_pattern(tmp_path):
    missing = str(tmp_path / "nowhere" / "*.txt")
    with pytest.raises(ValueError, match=r"data\.sources.*nowhere"):
        prepare(cfg_for(missing), tmp_path / "cache")
    with pytest.raises(ValueError, match=r"data\.sources.*memory://no-such"):
        prepare(cfg_for(f"memory://no-such-{uuid.uuid4().hex}/*.txt"), tmp_path / "cache")


def test_check_fits_names_seq_len_and_eval_tokens():
    data = PreparedData(root="/x", key="k", tokenizer_path="/x/t", train_path="/x/a",
                        val_path="/x/b", dtype="uint16", vocab_size=320, n_train_tokens=100,
                        n_val_tokens=50, n_train_docs=3, n_val_docs=1)
    check_fits(data, seq_len=99, eval_tokens=49)
    with pytest.raises(ValueError, match="model.seq_len=100"):
        check_fits(data, seq_len=100, eval_tokens=10)
    with pytest.raises(ValueError, match="trainer.eval_tokens=50.*at most 49"):
        check_fits(data, seq_len=10, eval_tokens=50)


def test_sample_batch_is_a_pure_function_of_seed_step_rank_micro():
    tokens = np.arange(10_000, dtype=np.uint16)
    x, y = sample_batch(tokens, 16, 8, seed=3, step=7, rank=1, micro=2)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(y, x + 1)  # next-token targets
    x2, y2 = sample_batch(tokens, 16, 8, seed=3, step=7, rank=1, micro=2)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    for other in ({"seed": 4}, {"step": 8}, {"rank": 0}, {"micro": 0}):
        kw = {"seed": 3, "step": 7, "rank": 1, "micro": 2, **other}
        assert not np.array_equal(sample_batch(tokens, 16, 8, **kw)[0], x), other


def test_sample_batch_starts_cover_every_window_and_stay_in_bounds():
    tokens = np.arange(20, dtype=np.uint32)
    seq_len = 17  # legal starts: 0, 1, 2 (the window needs seq_len + 1 tokens)
    starts = {int(sample_batch(tokens, seq_len, 4, seed=0, step=s, rank=0)[0][i, 0])
              for s in range(50) for i in range(4)}
    assert starts == {0, 1, 2}
    with pytest.raises(ValueError, match="model.seq_len"):
        sample_batch(tokens, 20, 1, seed=0, step=0, rank=0)


def test_val_windows_are_disjoint_and_spread_over_the_whole_split():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = val_windows(tokens, seq_len=32, eval_tokens=100)
    assert x.shape == (3, 32) and x.dtype == np.int64
    assert np.array_equal(y, x + 1)  # next-token targets
    starts = x[:, 0]
    assert starts[0] == 0 and starts[-1] == 1000 - 33  # first and last windows end the split
    assert (np.diff(starts) >= 32).all()  # disjoint
    assert (np.diff(x, axis=1) == 1).all()  # contiguous windows
    assert x.flags.writeable and y.flags.writeable  # torch.from_numpy wants writable memory
    with pytest.raises(ValueError, match="trainer.eval_tokens"):
        val_windows(tokens[:64], seq_len=32, eval_tokens=64)


def test_memory_sources_and_memory_cache_work_end_to_end(tmp_path):
    tag = uuid.uuid4().hex
    fs = fsspec.filesystem("memory")
    texts = [make_doc(i) for i in range(12)]
    for i, t in enumerate(texts):
        fs.pipe(f"/src-{tag}/part/{i:02d}.txt", t.encode())
    cfg = cfg_for(f"memory://src-{tag}/part/*.txt", vocab_size=300)
    cache = f"memory://cache-{tag}/data"
    try:
        data, logs = prepare(cfg, cache)
        assert data.root.startswith(f"memory://cache-{tag}/data/")
        assert fs.exists(f"/cache-{tag}/data/{data.key}/meta.json")
        restored = PreparedData.from_dict(json.loads(json.dumps(data.to_dict())))
        assert restored == data

        local = tmp_path / "node-cache"
        train = load_tokens(data.train_path, data.dtype, local_cache=str(local))
        assert isinstance(train, np.memmap) and len(train) == data.n_train_tokens
        assert train.tobytes() == fs.cat(f"/cache-{tag}/data/{data.key}/train.bin")
        assert len(os.listdir(local)) == 1
        load_tokens(data.train_path, data.dtype, local_cache=str(local))
        assert len(os.listdir(local)) == 1  # copied once per node
        docs = [t for p in (data.train_path, data.val_path)
                for t in decode_docs(data, p, local_cache=str(local))]
        assert sorted(docs) == sorted(texts)

        _, logs = prepare(cfg, cache)
        assert any("cache hit" in m for m in logs)
    finally:
        fs.rm(f"/src-{tag}", recursive=True)
        fs.rm(f"/cache-{tag}", recursive=True)


def test_stdlib_corpus_excludes_tests_and_site_packages(tmp_path):
    files = stdlib_text_files()
    assert len(files) > 200 and files == sorted(files)
    parts = {part for f in files for part in f.split(os.sep)}
    assert not parts & {"site-packages", "test", "tests", "idle_test"}
    with_tests = stdlib_text_files(exclude_tests=False)
    assert len(with_tests) > len(files) and any(f"{os.sep}test{os.sep}" in f for f in with_tests)

    cfg = DataConfig(sources=["stdlib"], max_bytes=2_000_000, vocab_size=512)
    data, logs = prepare(cfg, tmp_path / "cache")
    meta = json.loads(open(os.path.join(data.root, "meta.json")).read())
    assert 2_000_000 <= meta["n_bytes"] < 2_000_000 + max(os.path.getsize(f) for f in files)
    assert meta["sources"]["first"].startswith("stdlib/")
    assert data.n_val_docs > 0 and data.n_train_tokens > 300_000
    val = load_tokens(data.val_path, data.dtype)
    assert int(val.max()) < 512
    tok = load_tokenizer(data.tokenizer_path)
    first_val_doc = tok.decode(np.asarray(val[:np.flatnonzero(val == tok.token_to_id(EOT))[0]]).tolist())
    assert first_val_doc.strip() and tok.decode(tok.encode(first_val_doc).ids) == first_val_doc


def test_overlapping_patterns_and_directories_read_each_file_once(corpus, tmp_path):
    d, texts = corpus
    cfg = cfg_for(d / "*.txt", sources=[str(d), str(d / "doc001.txt"), str(d / "*.txt")])
    data, _ = prepare(cfg, tmp_path / "cache")
    assert data.n_train_docs + data.n_val_docs == len(texts)
    assert data == prepare(cfg_for(d / "*.txt"), tmp_path / "cache")[0]  # same files, same key
