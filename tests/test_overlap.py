"""The train/validation line overlap: its hashing and counting (pure, milliseconds), what data
preparation records, and the report's line and warning."""

from __future__ import annotations

import numpy as np

from llm_ray.core.plan import SweepConfig
from llm_ray.core.records import PlanRecord
from llm_ray.data.overlap import (MIN_CHARS, SAMPLE, WARN_SHARE, drop_repeated_lines, earlier_lines, line_hash,
                                  line_hashes, lines_in_train)
from llm_ray.reporting.markdown import overlap_lines
from test_data_formats import DOCS, all_docs, cfg_for, prepare


def test_only_long_lines_are_hashed_and_one_hash_value_in_sample_is_kept():
    short = "x" * (MIN_CHARS - 1)
    assert line_hashes(f"{short}\n\n   {short}   \n") == []
    lines = [f"line number {i:06d} of a long enough text" for i in range(8000)]
    kept = line_hashes("\n".join(lines))
    assert all(h % SAMPLE == 0 for h in kept)
    assert 0.8 / SAMPLE < len(kept) / len(lines) < 1.2 / SAMPLE
    # The same line hashes the same wherever it is, surrounding whitespace stripped.
    assert line_hashes("\n".join("  " + x + "\t" for x in lines)) == kept


def test_the_share_counts_validation_lines_whose_hash_the_training_split_holds():
    train = [np.array([8, 16], dtype=np.uint64), np.array([24], dtype=np.uint64)]
    share, counted = lines_in_train(train, [np.array([8, 32, 24, 40], dtype=np.uint64)])
    assert (share, counted) == (0.5, 4)
    assert lines_in_train(train, [np.zeros(0, np.uint64)]) == (None, 0)


def test_preparation_records_no_overlap_for_distinct_documents_and_a_large_one_for_shared_lines(tmp_path):
    distinct, _ = prepare(cfg_for(_write(tmp_path / "a", DOCS)), tmp_path / "cache")
    assert distinct.val_lines_in_train == 0.0
    # Every document ends with the same 40 long lines (a licence footer, an option table).
    footer = "\n".join(f"Shared footer line {i:02d} that every document repeats verbatim" for i in range(40))
    shared, logs = prepare(cfg_for(_write(tmp_path / "b", [d + "\n" + footer for d in DOCS])), tmp_path / "cache")
    assert shared.val_lines_in_train > 0.2
    assert any("also occur in the training split" in m for m in logs)
    assert all_docs(shared) == sorted(d + "\n" + footer for d in DOCS)  # measuring changes no token


def test_a_line_is_dropped_where_an_earlier_piece_or_an_earlier_place_in_its_own_piece_holds_it():
    a, b, c = (np.array(x, dtype=np.uint64) for x in ([5, 7, 5], [7, 9], [9, 5, 11]))
    assert [x.tolist() for x in earlier_lines([a, b, c])] == [[], [7], [5, 9]]
    long = [f"a line long enough to count, number {i}" for i in range(3)]
    text = f"{long[0]}\nshort\n{long[1]}\nshort\n{long[0]}\n{long[2]}\n"
    seen: set = set()
    out = drop_repeated_lines(text, seen, earlier={line_hash(long[2])})
    assert out == f"{long[0]}\nshort\n{long[1]}\nshort\n"  # short lines always stay
    assert drop_repeated_lines(long[1] + "\n", seen, set()) == ""  # seen earlier in the same piece


def test_dedup_lines_keeps_each_long_line_once_in_the_whole_corpus_and_removes_the_overlap(tmp_path):
    footer = [f"Shared footer line {i:02d} that every document repeats verbatim" for i in range(40)]
    docs = [d + "\n" + "\n".join(footer) for d in DOCS]
    # Pieces of ~2 kB: the repeats cross pieces, so the driver's pass over all of them is what finds them.
    data, logs = prepare(cfg_for(_write(tmp_path / "c", docs), dedup_lines=True, task_bytes=2000), tmp_path / "cache")
    assert data.val_lines_in_train == 0.0
    text = "\n".join(all_docs(data))
    assert all(text.count(line) == 1 for line in footer)
    assert all(line in text for d in DOCS for line in d.splitlines() if len(line.strip()) >= MIN_CHARS)
    assert any("dedup_lines: 1,560 of 2," in m for m in logs), logs  # 39 repeats x 40 lines
    again, logs = prepare(cfg_for(tmp_path / "c" / "*.txt", dedup_lines=True, task_bytes=2000), tmp_path / "cache")
    assert again == data and any("cache hit" in m for m in logs)


def _write(d, docs):
    d.mkdir()
    for i, t in enumerate(docs):
        (d / f"doc{i:03d}.txt").write_text(t, encoding="utf-8")
    return d / "*.txt"


def test_the_report_states_the_overlap_and_warns_only_from_the_threshold_on():
    plan = PlanRecord(sweep=SweepConfig())
    assert overlap_lines(plan) == []
    low = overlap_lines(PlanRecord(sweep=SweepConfig(), val_lines_in_train=0.16))
    high = overlap_lines(PlanRecord(sweep=SweepConfig(), val_lines_in_train=WARN_SHARE + 0.09))
    assert "16.0% of the validation split" in low[0] and "Warning" not in low[0]
    assert "34.0% of the validation split" in high[0] and "Warning" in high[0] and "data.dedup_lines=true" in high[0]
    assert PlanRecord.from_json(PlanRecord(sweep=SweepConfig(), val_lines_in_train=0.16).to_json()).val_lines_in_train == 0.16
