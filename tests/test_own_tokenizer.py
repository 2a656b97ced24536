"""A tokenizer.json of one's own (HF `tokenizers` format) instead of the trained BPE: used as is
(<|endoftext|> added when missing), its vocabulary sizes the model, and the cache is keyed by it."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_ray.core.config import DataConfig
from llm_ray.data import EOT, load_split, load_tokenizer, prepare_data

TEXT = "".join(f"Chapter {i}. The sea was calm, the crew slept; naïve café ✓.\n\n" for i in range(4000))


def byte_level_tokenizer_json(path, vocab_size=400, special=()) -> str:
    """A GPT-2-style byte-level BPE saved as tokenizer.json, as a user brings one."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tok.save(str(path))
    return str(path)


def test_a_tokenizer_json_is_used_as_is_and_gains_an_end_of_text_token(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(TEXT)
    mine = byte_level_tokenizer_json(tmp_path / "tokenizer.json")
    n_file = Tokenizer.from_file(mine).get_vocab_size()
    logs = []
    data = prepare_data(DataConfig(sources=[str(book)], tokenizer=mine, vocab_size=4096, max_bytes=None),
                        str(tmp_path / "cache"), log=logs.append)
    assert data.vocab_size == n_file + 1  # its own tokens plus <|endoftext|>
    assert any(f"tokenizer {mine} (vocab {n_file + 1}), not trained" in m for m in logs), logs
    tok = load_tokenizer(data.tokenizer_path)
    assert tok.get_vocab() == {**Tokenizer.from_file(mine).get_vocab(), EOT: n_file}
    ids = np.asarray(load_split(data, "train"))
    assert ids.max() < data.vocab_size and (ids == tok.token_to_id(EOT)).sum() == data.n_train_docs
    # Another tokenizer.json is another cache entry; the same one is a hit.
    other = byte_level_tokenizer_json(tmp_path / "other.json", vocab_size=350, special=[EOT])
    again = prepare_data(DataConfig(sources=[str(book)], tokenizer=mine, max_bytes=None), str(tmp_path / "cache"),
                         log=logs.append)
    assert again.root == data.root
    data2 = prepare_data(DataConfig(sources=[str(book)], tokenizer=other, max_bytes=None), str(tmp_path / "cache"),
                         log=logs.append)
    assert data2.root != data.root and data2.vocab_size == 350  # it had <|endoftext|> already


def test_the_model_takes_the_tokenizers_vocabulary_with_no_extra_override(tmp_path):
    from llm_ray.cli import compose_train
    from llm_ray.core.config import validate_train_job
    from llm_ray.training.launch import with_data_vocab

    book = tmp_path / "book.txt"
    book.write_text(TEXT)
    mine = byte_level_tokenizer_json(tmp_path / "tokenizer.json")
    job = compose_train("model=tiny", f"data.sources=[{book}]", f"data.tokenizer={mine}")
    data = prepare_data(job.data, str(tmp_path / "cache"), log=lambda m: None)
    job = with_data_vocab(job, data)
    assert job.model.vocab_size == job.data.vocab_size == data.vocab_size
    validate_train_job(job)


def test_a_missing_or_broken_tokenizer_file_names_the_field(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(TEXT)
    with pytest.raises(ValueError, match="data.tokenizer=.*does not exist"):
        prepare_data(DataConfig(sources=[str(book)], tokenizer=str(tmp_path / "nope.json")), str(tmp_path / "c"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="data.tokenizer=.*is not a tokenizer.json"):
        prepare_data(DataConfig(sources=[str(book)], tokenizer=str(tmp_path / "bad.json")), str(tmp_path / "c"))
