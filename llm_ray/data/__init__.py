"""Corpus -> byte-level BPE tokenizer -> token shards -> deterministic batches.

- `prepare`: sources, the document split, the tokenizer and the content-keyed shard cache (driver);
- `shards`: reading shards back on workers (memory-mapped; remote ones cached per node);
- `sampler`: batches as a pure function of (seed, step, rank, micro), and the fixed validation set.
"""

from llm_ray.data.prepare import EOT, STDLIB, PreparedData, prepare_data, stdlib_text_files
from llm_ray.data.sampler import check_fits, sample_batch, val_windows
from llm_ray.data.shards import load_tokenizer, load_tokens

__all__ = ["EOT", "STDLIB", "PreparedData", "check_fits", "load_tokenizer", "load_tokens", "prepare_data",
           "sample_batch", "stdlib_text_files", "val_windows"]
