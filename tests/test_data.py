"""Data pipeline: sources -> split -> BPE -> cached token shards -> deterministic batches.

Real tokenizers and fsspec throughout (local files, memory://, and this machine's stdlib), prepared
in the test's own process (small corpora never start Ray Data; tests/test_data_ray.py does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import fsspec
import numpy as np
import pytest

from llm_ray.core.config import DataConfig
from llm_ray.data import (EOT, PreparedData, TokenStream, check_fits, load_split, load_tokenizer,
                          load_tokens, prepare_data, sample_batch, stdlib_text_files, val_windows)
from llm_ray.data.sources import held_out, split_u

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


def decode_docs(data: PreparedData, split: str, local_cache=None) -> list[str]:
    """The documents of a split, each followed by <|endoftext|>."""
    tok = load_tokenizer(data.tokenizer_path)
    ids = np.asarray(load_split(data, split, local_cache=local_cache))
    assert ids[-1] == tok.token_to_id(EOT)  # every document ends with <|endoftext|>
    cuts = np.flatnonzero(ids == tok.token_to_id(EOT))
    return [tok.decode(part[:-1].tolist()) for part in np.split(ids, cuts + 1)[:-1]]


def split_bytes(data: PreparedData, split: str) -> bytes:
    return np.asarray(load_split(data, split)).tobytes()


def entry_files(data: PreparedData) -> dict:
    """relative path -> mtime of every file of an entry."""
    out = {}
    for d, _, names in os.walk(data.root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, data.root)] = os.stat(p).st_mtime_ns
    return out


def piece_of(shard: dict) -> str:
    """The piece a shard of the manifest belongs to: shards are named <piece>-<k>.bin."""
    return os.path.basename(shard["path"]).split("-")[0]


def manifest(data: PreparedData) -> dict:
    return json.loads(open(data.manifest_path).read())


# --------------------------------------------------------------------------------------------

def test_cache_is_keyed_by_content(corpus, tmp_path):
    d, _ = corpus
    cache = tmp_path / "cache"
    cfg = cfg_for(d / "*.txt")
    first, logs = prepare(cfg, cache)
    assert not any("cache hit" in m for m in logs)
    assert any(f"building {first.root}" in m for m in logs)
    files = entry_files(first)
    assert {"tokenizer.json", "manifest.json"} <= set(files) and any(f.startswith("train/") for f in files)

    again, logs = prepare(cfg, cache)
    assert again == first
    assert any("cache hit" in m for m in logs)
    assert not any("BPE" in m or "encoded" in m for m in logs)
    assert entry_files(again) == files

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
    # Where it runs changes nothing written: same key, a hit.
    _, logs = prepare(dataclasses.replace(cfg, vocab_size=330, ray_min_bytes=10**12), cache)
    assert any("cache hit" in m for m in logs)



def test_split_is_by_document_deterministic_disjoint_and_non_empty(corpus, tmp_path):
    d, texts = corpus
    cfg = cfg_for(d / "*.txt")
    a, _ = prepare(cfg, tmp_path / "c1")
    b, _ = prepare(cfg, tmp_path / "c2")
    assert a.n_train_docs + a.n_val_docs == len(texts)
    assert a.n_train_docs > 0 and a.n_val_docs > 0
    assert split_bytes(a, "val") == split_bytes(b, "val")
    assert split_bytes(a, "train") == split_bytes(b, "train")

    train_docs, val_docs = decode_docs(a, "train"), decode_docs(a, "val")
    assert sorted(train_docs + val_docs) == sorted(texts.values())  # whole documents, each once
    assert not set(train_docs) & set(val_docs)
    names = sorted(texts)
    expected = [n for n in names if held_out(n, 0, 0.2)] or [min(names, key=lambda n: split_u(n, 0))]
    assert [texts[n] for n in expected] == val_docs  # in name order

    other_seed, _ = prepare(dataclasses.replace(cfg, seed=1), tmp_path / "c1")
    assert set(decode_docs(other_seed, "val")) != set(val_docs)



def test_split_rule_is_per_document_and_stable_as_the_corpus_grows():
    names = [f"s3://bucket/corpus/{i}.txt" for i in range(400)]
    is_val = [held_out(n, 0, 0.1) for n in names]
    assert 20 < sum(is_val) < 60
    # A document's side depends only on (seed, its id): adding documents moves nobody.
    more = names + [f"s3://bucket/extra/{i}.txt" for i in range(100)]
    assert [held_out(n, 0, 0.1) for n in more][:400] == is_val
    assert [held_out(n, 1, 0.1) for n in names] != is_val


def test_a_small_corpus_never_has_an_empty_split_and_a_large_one_says_how_to_fix_it(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/two-docs-{uuid.uuid4().hex}"
    names = ["a.txt", "b.txt", "c.txt"]
    try:
        for i, n in enumerate(names):
            fs.pipe(f"{root}/{n}", (make_doc(i) * 20).encode())
        ids = [f"memory://{root}/{n}" for n in names]  # a document's id is its URL
        assert not any(held_out(i, 0, 0.01) for i in ids)
        # Read whole (smaller than the tokenizer sample): the document with the smallest hash is held out.
        data, logs = prepare(cfg_for(f"memory://{root}/*.txt", val_fraction=0.01), tmp_path / "cache")
        lowest = min(ids, key=lambda i: split_u(i, 0))
        assert (data.n_train_docs, data.n_val_docs) == (2, 1)
        assert any(f"{lowest} goes there" in m for m in logs), logs
        assert decode_docs(data, "val") == [fs.cat(lowest.split("memory://")[1]).decode()]
        # Too large to be sampled whole: nothing is moved, and the empty split is an error.
        with pytest.raises(ValueError, match=r"data\.val_fraction=0\.01: all 3 documents fell in the train"):
            prepare(cfg_for(f"memory://{root}/*.txt", val_fraction=0.01, tokenizer_sample_bytes=3000),
                    tmp_path / "cache2")
        assert not list((tmp_path / "cache2").rglob("manifest.json"))
        fs.rm(f"{root}/b.txt")
        fs.rm(f"{root}/c.txt")
        with pytest.raises(ValueError, match=r"found 1 document.*data\.delimiter"):
            prepare(cfg_for(f"memory://{root}/*.txt", large_file_bytes=None), tmp_path / "cache")
    finally:
        fs.rm(root, recursive=True)



def test_tokens_use_the_smallest_dtype_and_round_trip(corpus, tmp_path):
    d, texts = corpus
    cfg = cfg_for(d / "*.txt")
    small, _ = prepare(cfg, tmp_path / "cache")
    wide, _ = prepare(dataclasses.replace(cfg, token_dtype="uint32"), tmp_path / "cache")
    assert (small.dtype, wide.dtype) == ("uint16", "uint32")
    assert small.key != wide.key
    t16, t32 = load_split(small, "train"), load_split(wide, "train")
    assert (t16.dtype, t32.dtype) == (np.uint16, np.uint32)
    shard = manifest(wide)["splits"]["train"]["shards"][0]
    assert os.path.getsize(os.path.join(wide.root, shard["path"])) == 4 * shard["tokens"]
    assert np.array_equal(np.asarray(t16), np.asarray(t32)) and int(np.asarray(t16).max()) < cfg.vocab_size
    assert not load_tokens(os.path.join(small.root, shard["path"]), "uint16").flags.writeable

    tok = load_tokenizer(small.tokenizer_path)
    assert tok.get_vocab_size() == cfg.vocab_size
    doc = texts[str(d / "doc007.txt")]
    assert tok.decode(tok.encode(doc).ids) == doc



def test_vocab_larger_than_the_corpus_supports_asks_to_lower_it(corpus, tmp_path):
    d, _ = corpus
    with pytest.raises(ValueError, match=r"(?i)lower data\.vocab_size to at most (\d+)") as err:
        prepare(cfg_for(d / "*.txt", vocab_size=20000), tmp_path / "cache")
    suggested = int(re.search(r"at most (\d+)", err.value.args[0]).group(1))
    assert "data.tokenizer_sample_bytes" in err.value.args[0]  # a bigger sample may support it
    data, _ = prepare(cfg_for(d / "*.txt", vocab_size=suggested), tmp_path / "cache")
    assert data.vocab_size == suggested


def test_damaged_entry_is_not_a_hit_and_is_repaired_or_rebuilt(corpus, tmp_path):
    d, _ = corpus
    cfg = cfg_for(d / "*.txt", task_bytes=20_000)  # several pieces
    good, _ = prepare(cfg, tmp_path / "cache")
    reference = {s: split_bytes(good, s) for s in ("train", "val")}
    shards = manifest(good)["splits"]
    assert len(manifest(good)["pieces"]) > 3

    val_shard = os.path.join(good.root, shards["val"]["shards"][0]["path"])
    with open(val_shard, "r+b") as f:  # a shard damaged after the manifest: sizes disagree
        f.truncate(4)
    # A train shard of another piece: which piece holds a val document depends on tmp_path's name.
    damaged_piece = piece_of(shards["val"]["shards"][0])
    kept = next(os.path.join(good.root, s["path"]) for s in shards["train"]["shards"]
                if piece_of(s) != damaged_piece)
    kept_mtime = os.stat(kept).st_mtime_ns
    repaired, logs = prepare(cfg, tmp_path / "cache")
    assert not any("cache hit" in m for m in logs)
    assert any("resuming" in m and "manifest no longer matched" in m for m in logs), logs
    assert repaired == good and {s: split_bytes(repaired, s) for s in reference} == reference
    # Only the damaged piece was encoded again.
    assert os.stat(kept).st_mtime_ns == kept_mtime

    os.remove(good.manifest_path)
    os.remove(good.tokenizer_path)  # nothing can be kept without the tokenizer the pieces used
    rebuilt, logs = prepare(cfg, tmp_path / "cache")
    assert any("rebuilding" in m for m in logs), logs
    assert rebuilt == good and {s: split_bytes(rebuilt, s) for s in reference} == reference
    assert not [n for n in entry_files(rebuilt) if ".tmp-" in n]


KILLED_PREPARE = """
import sys
from llm_ray.core.config import DataConfig
from llm_ray.data import prepare_data
cfg = DataConfig(sources=[sys.argv[1]], vocab_size=320, val_fraction=0.2, task_bytes=20_000)
prepare_data(cfg, sys.argv[2])
"""


def test_preparation_killed_midway_is_never_read_and_resumes(tmp_path):
    """SIGKILL the preparing process once some pieces are written: the entry has no manifest, the
    next run keeps the finished pieces, encodes the rest, and ends byte-identical to a clean run."""
    d = tmp_path / "big"
    d.mkdir()
    for i in range(160):
        (d / f"doc{i:03d}.txt").write_text(make_doc(i) * 3, encoding="utf-8")
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PREPARE, str(d / "*.txt"), str(cache)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not list(cache.glob("*/pieces/*.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, f"the preparation ended before it was killed:\n{out}"
    assert not list(cache.glob("*/manifest.json"))

    cfg = DataConfig(sources=[str(d / "*.txt")], vocab_size=320, val_fraction=0.2, task_bytes=20_000)
    resumed, logs = prepare(cfg, cache)
    line = next(m for m in logs if "resuming" in m)
    kept, total = (int(x) for x in re.search(r": (\d+) of (\d+) pieces", line).groups())
    assert 1 <= kept < total, line
    clean, _ = prepare(cfg, tmp_path / "clean")
    assert resumed.key == clean.key and resumed.n_train_tokens == clean.n_train_tokens
    for s in ("train", "val"):
        assert split_bytes(resumed, s) == split_bytes(clean, s)
    assert open(resumed.tokenizer_path).read() == open(clean.tokenizer_path).read()



def test_missing_sources_name_the_field_and_the_pattern(tmp_path):
    missing = str(tmp_path / "nowhere" / "*.txt")
    with pytest.raises(ValueError, match=r"data\.sources.*nowhere"):
        prepare(cfg_for(missing), tmp_path / "cache")
    with pytest.raises(ValueError, match=r"data\.sources.*memory://no-such"):
        prepare(cfg_for(f"memory://no-such-{uuid.uuid4().hex}/*.txt"), tmp_path / "cache")


def test_check_fits_names_seq_len_and_evaluates_a_short_val_split_whole():
    data = PreparedData(root="/x", key="k", tokenizer_path="/x/t", manifest_path="/x/m",
                        dtype="uint16", vocab_size=320, n_train_tokens=100,
                        n_val_tokens=50, n_train_docs=3, n_val_docs=1)
    logs = []
    check_fits(data, seq_len=49, eval_tokens=49, log=logs.append)
    assert logs == []
    with pytest.raises(ValueError, match="model.seq_len=100"):
        check_fits(data, seq_len=100, eval_tokens=10)
    with pytest.raises(ValueError, match="model.seq_len=50 needs 51 validation tokens"):
        check_fits(data, seq_len=50, eval_tokens=50)
    check_fits(data, seq_len=10, eval_tokens=65536, log=logs.append)  # a small corpus: a warning
    assert len(logs) == 1 and "trainer.eval_tokens=65,536: evaluating on 40 (4 windows of 10)" in logs[0]


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
    assert len(val_windows(tokens[:64], seq_len=32, eval_tokens=64)[0]) == 1  # what the split holds
    with pytest.raises(ValueError, match="trainer.eval_tokens"):
        val_windows(tokens[:32], seq_len=32, eval_tokens=64)


def test_memory_sources_and_memory_cache_work_end_to_end(tmp_path):
    tag = uuid.uuid4().hex
    fs = fsspec.filesystem("memory")
    texts = [make_doc(i) for i in range(12)]
    for i, t in enumerate(texts):
        fs.pipe(f"/src-{tag}/part/{i:02d}.txt", t.encode())
    cfg = cfg_for(f"memory://src-{tag}/part/*.txt", vocab_size=300, task_bytes=10_000)
    cache = f"memory://cache-{tag}/data"
    try:
        data, logs = prepare(cfg, cache)
        assert data.root.startswith(f"memory://cache-{tag}/data/")
        assert fs.exists(f"/cache-{tag}/data/{data.key}/manifest.json")
        restored = PreparedData.from_dict(json.loads(json.dumps(data.to_dict())))
        assert restored == data

        local = tmp_path / "node-cache"
        train = load_split(data, "train", local_cache=str(local))
        shards = json.loads(fs.cat(f"/cache-{tag}/data/{data.key}/manifest.json"))["splits"]["train"]["shards"]
        assert len(shards) > 1 and len(train) == data.n_train_tokens
        assert all(isinstance(p, np.memmap) for p in train.parts)
        assert np.asarray(train).tobytes() == b"".join(
            fs.cat(f"/cache-{tag}/data/{data.key}/{s['path']}") for s in shards)
        copies = sorted(os.listdir(local))
        assert len(copies) == len(shards)
        load_split(data, "train", local_cache=str(local))
        assert sorted(os.listdir(local)) == copies  # copied once per node
        docs = [t for s in ("train", "val") for t in decode_docs(data, s, local_cache=str(local))]
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
    meta = manifest(data)
    assert 2_000_000 <= meta["n_bytes"] < 2_000_000 + max(os.path.getsize(f) for f in files)
    assert meta["sources"]["first"].startswith("stdlib/")
    assert data.n_val_docs > 0 and data.n_train_tokens > 300_000
    # The cap is stated with what it left out.
    assert any("data.max_bytes=2,000,000 left out" in m and "files" in m for m in logs), logs
    val = load_split(data, "val")
    assert int(np.asarray(val).max()) < 512
    tok = load_tokenizer(data.tokenizer_path)
    first_val_doc = decode_docs(data, "val")[0]
    assert first_val_doc.strip() and tok.decode(tok.encode(first_val_doc).ids) == first_val_doc



def test_overlapping_patterns_and_directories_read_each_file_once(corpus, tmp_path):
    d, texts = corpus
    cfg = cfg_for(d / "*.txt", sources=[str(d), str(d / "doc001.txt"), str(d / "*.txt")])
    data, _ = prepare(cfg, tmp_path / "cache")
    assert data.n_train_docs + data.n_val_docs == len(texts)
    assert data == prepare(cfg_for(d / "*.txt"), tmp_path / "cache")[0]  # same files, same key
