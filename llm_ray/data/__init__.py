"""Corpus -> byte-level BPE tokenizer -> token shards -> deterministic batches.

- `sources`: which files, grouped into pieces; the documents each holds (text, JSON Lines, Parquet);
- `encode`: what one task does to a piece (tokenizer sample; encoding into shards);
- `pipeline`: where the tasks run (this process, or Ray Data across the cluster);
- `prepare`: the driver's side: the content-keyed cache entry, its tokenizer, resume, manifest;
- `shards`: reading shards back on workers (memory-mapped; remote ones cached per node);
- `sampler`: batches as a pure function of (seed, step, rank, micro), and the fixed validation set.
"""

from llm_ray.data.encode import EOT
from llm_ray.data.prepare import PreparedData, prepare_data
from llm_ray.data.sampler import check_fits, sample_batch, val_windows
from llm_ray.data.shards import TokenStream, load_split, load_tokenizer, load_tokens
from llm_ray.data.sources import STDLIB, CorpusError, stdlib_text_files

__all__ = ["EOT", "STDLIB", "CorpusError", "PreparedData", "TokenStream", "check_fits", "load_split",
           "load_tokenizer", "load_tokens", "prepare_data", "sample_batch", "stdlib_text_files",
           "val_windows"]
