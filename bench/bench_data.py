"""Benchmark of corpus preparation (llm_ray.data), side by side in one run:

1. the embedded default (the stdlib sources with their test folders, ~31 MB, vocabulary 512, as the
   default sweep uses it): the old in-process path, the new one in the driver (the default for a
   corpus this small), the new one through Ray Data (ray.init included), and a cache hit;
2. throughput in MB/s of raw text with 1 and with 2 CPUs for Ray Data's tasks (`ray.init(num_cpus=N)`)
   on a corpus of --scaling-mb, for the encoding stage (what the tasks do: read, split, encode, write)
   and for the whole preparation (which adds the tokenizer sample and the BPE on the driver);
3. the driver's peak RSS while preparing that corpus and one of --gb (>= 1 GB), with 2 CPUs: it must
   stay under a fixed bound (--rss-bound-gb) whatever the size; and the old in-process path on the
   same --gb corpus.

The corpora are real text: this Python's standard-library sources (UTF-8 ones), copied until the
size is reached, each copy's files with their lines in a different seeded order (so that no two
copies are the same documents). They are generated once under --workdir and reused. Every
measurement runs in a fresh Python process (cold imports, its own peak RSS, its own Ray).

    python bench/bench_data.py [--gb 1.0] [--scaling-mb 256] [--workdir /tmp/llm-ray-bench-data] [--no-legacy]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------

def make_corpus(root: str, target_bytes: int) -> list[str]:
    """Copies of the stdlib sources (UTF-8 files only) until `target_bytes`; returns the copy
    directories. Idempotent: copies already written are kept."""
    from llm_ray.data import stdlib_text_files

    base = sysconfig.get_paths()["stdlib"]
    texts = []
    for f in stdlib_text_files(exclude_tests=False):
        blob = open(f, "rb").read()
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if blob:
            texts.append((os.path.relpath(f, base), blob))
    per_copy = sum(len(b) for _, b in texts)
    copies = []
    for c in range(-(-target_bytes // per_copy)):
        d = os.path.join(root, f"copy{c:03d}")
        copies.append(d)
        if os.path.exists(os.path.join(d, ".done")):
            continue
        rng = np.random.default_rng(c)
        for rel, blob in texts:
            lines = blob.split(b"\n")
            if c:
                lines = [lines[i] for i in rng.permutation(len(lines))]
            path = os.path.join(d, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(b"\n".join(lines))
        open(os.path.join(d, ".done"), "w").close()
    return copies


def corpus_bytes(dirs: list[str]) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for top in dirs for d, _, fs in os.walk(top)
               for f in fs if f != ".done")


# --------------------------------------------------------------------------------------------
# The old path (llm_ray/data.py before Ray Data), kept here for comparison only
# --------------------------------------------------------------------------------------------

def legacy_prepare(paths: list[str], out: str, vocab_size: int, seed: int = 0, val_fraction: float = 0.05) -> dict:
    """Every file read into the driver's memory, the BPE trained on all train documents, the whole
    corpus encoded in this process, one train.bin and one val.bin."""
    from llm_ray.data.prepare import _train_tokenizer

    t0 = time.perf_counter()
    texts = [open(p, "rb").read().decode("utf-8", errors="replace") for p in paths]
    u = [int.from_bytes(hashlib.sha256(f"{seed}\0{p}".encode()).digest()[:8], "big") / 2.0**64 for p in paths]
    n_val = min(max(sum(x < val_fraction for x in u), 1), len(paths) - 1)
    val = set(sorted(range(len(paths)), key=lambda i: (u[i], paths[i]))[:n_val])
    train = [t for i, t in enumerate(texts) if i not in val]
    held = [t for i, t in enumerate(texts) if i in val]
    t1 = time.perf_counter()
    tok = _train_tokenizer(train, vocab_size, 0)
    t2 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    n_tokens = 0
    for name, docs in (("train", train), ("val", held)):
        ids = _legacy_encode(tok, docs)
        n_tokens += ids.size
        ids.tofile(os.path.join(out, f"{name}.bin"))
    return {"text_bytes": sum(len(t.encode()) for t in texts), "tokens": int(n_tokens),
            "read_s": t1 - t0, "bpe_s": t2 - t1, "encode_s": time.perf_counter() - t2}


def _legacy_encode(tok, texts: list[str], chunk_bytes: int = 32_000_000) -> np.ndarray:
    eot = tok.token_to_id("<|endoftext|>")
    parts, i = [], 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and (j == i or size < chunk_bytes):
            size += len(texts[j])
            j += 1
        for k, enc in enumerate(tok.encode_batch_fast(texts[i:j], add_special_tokens=False)):
            if i + k:
                parts.append(np.array([eot], dtype=np.uint16))
            parts.append(np.asarray(enc.ids, dtype=np.uint16))
        i = j
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# One measurement = one fresh process
# --------------------------------------------------------------------------------------------

def child(spec: dict) -> dict:
    """Run one measurement in this (fresh) process; its peak RSS is this process's."""
    from llm_ray.core.config import DataConfig
    from llm_ray.data import prepare_data

    out: dict = {}
    if spec["mode"] == "legacy":
        paths = sorted(os.path.join(d, f) for top in spec["dirs"] for d, _, fs in os.walk(top)
                       for f in fs if f != ".done" and os.path.getsize(os.path.join(d, f)))
        if spec.get("stdlib"):
            from llm_ray.data import stdlib_text_files
            paths = [p for p in stdlib_text_files(exclude_tests=False) if os.path.getsize(p)]
        t0 = time.perf_counter()
        out.update(legacy_prepare(paths, spec["cache"], spec["vocab_size"]))
        out["wall_s"] = time.perf_counter() - t0
    else:
        if spec.get("cpus"):
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=spec["cpus"], include_dashboard=False, log_to_driver=False)
            out["ray_init_s"] = time.perf_counter() - t0
        cfg = DataConfig(sources=spec["sources"], exclude_tests=False, vocab_size=spec["vocab_size"],
                         ray_min_bytes=spec.get("ray_min_bytes", 64_000_000))
        for _ in range(spec.get("repeat", 1)):
            t0 = time.perf_counter()
            data = prepare_data(cfg, spec["cache"], log=lambda m: print(m, file=sys.stderr, flush=True))
            out["wall_s"] = time.perf_counter() - t0
        m = json.load(open(data.manifest_path))
        out.update(text_bytes=sum(s["text_bytes"] for s in m["splits"].values()),
                   tokens=data.n_train_tokens + data.n_val_tokens, pieces=len(m["pieces"]),
                   **{k: m["build"].get(k) for k in ("sample_s", "bpe_s", "encode_s", "executor")})
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def measure(spec: dict, label: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ROOT, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    print(f"  {label}: {result['wall_s']:.1f} s, peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB "
          f"({result['process_s']:.0f} s with start-up)", flush=True)
    return result


def mb_s(r: dict, key: str = "wall_s") -> float:
    return r["text_bytes"] / 1e6 / r[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="size of the large corpus (GB, as stored)")
    ap.add_argument("--scaling-mb", type=float, default=256, help="corpus for the 1 vs 2 CPU runs (MB)")
    ap.add_argument("--rss-bound-gb", type=float, default=1.5)
    ap.add_argument("--workdir", default="/tmp/llm-ray-bench-data")
    ap.add_argument("--no-legacy", action="store_true", help="skip the old path on the large corpus")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    os.makedirs(args.workdir, exist_ok=True)
    caches = os.path.join(args.workdir, "caches")
    shutil.rmtree(caches, ignore_errors=True)  # every run cold
    t0 = time.perf_counter()
    big = make_corpus(os.path.join(args.workdir, "corpus"), int(args.gb * 1e9))
    n_scaling = max(1, round(args.scaling_mb * 1e6 / corpus_bytes(big[:1])))
    small = big[:n_scaling]
    sizes = {"scaling": corpus_bytes(small), "big": corpus_bytes(big)}
    print(f"corpora: {sizes['scaling'] / 1e6:.0f} MB and {sizes['big'] / 1e9:.2f} GB of stdlib text "
          f"({time.perf_counter() - t0:.0f} s to write or find); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    def cache(name: str) -> str:
        return os.path.join(caches, name)

    print("1. the embedded default (stdlib with tests, vocabulary 512)")
    std = {"sources": ["stdlib"], "vocab_size": 512}
    r_legacy = measure({"mode": "legacy", "stdlib": True, "dirs": [], "cache": cache("std-legacy"),
                        "vocab_size": 512}, "old path, in-process")
    r_driver = measure({**std, "mode": "new", "cache": cache("std-driver")}, "new, in the driver (default)")
    r_ray = measure({**std, "mode": "new", "cache": cache("std-ray"), "cpus": 2, "ray_min_bytes": 0},
                    "new, Ray Data tasks (2 CPUs)")
    r_hit = measure({**std, "mode": "new", "cache": cache("std-driver")}, "new, cache hit")

    print(f"2. Ray Data tasks with 1 and 2 CPUs ({sizes['scaling'] / 1e6:.0f} MB)")
    scaling = {"sources": small, "vocab_size": 4096, "mode": "new", "ray_min_bytes": 0}
    r1 = measure({**scaling, "cache": cache("scaling-1"), "cpus": 1}, "1 CPU")
    r2 = measure({**scaling, "cache": cache("scaling-2"), "cpus": 2}, "2 CPUs")

    print(f"3. the driver's memory ({sizes['big'] / 1e9:.2f} GB)")
    rb = measure({**scaling, "sources": big, "cache": cache("big-2"), "cpus": 2}, "new, 2 CPUs")
    r_old = None if args.no_legacy else measure(
        {"mode": "legacy", "dirs": big, "cache": cache("big-legacy"), "vocab_size": 4096}, "old path, in-process")

    gib = 2**30
    print("\nresults (MB/s of raw text; measured side by side in this run; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  default corpus, cold: old {r_legacy['wall_s']:.1f} s | new in the driver {r_driver['wall_s']:.1f} s "
          f"(ratio {r_legacy['wall_s'] / r_driver['wall_s']:.2f}) | new on Ray Data {r_ray['wall_s']:.1f} s "
          f"+ ray.init {r_ray['ray_init_s']:.1f} s | cached {r_hit['wall_s']:.2f} s")
    print(f"  encoding stage (Ray Data tasks): 1 CPU {mb_s(r1, 'encode_s'):.2f} MB/s, 2 CPUs "
          f"{mb_s(r2, 'encode_s'):.2f} MB/s: ratio {r2['text_bytes'] / r2['encode_s'] / (r1['text_bytes'] / r1['encode_s']):.2f} (target >= 1.7)")
    print(f"  whole preparation: 1 CPU {mb_s(r1):.2f} MB/s, 2 CPUs {mb_s(r2):.2f} MB/s: ratio "
          f"{mb_s(r2) / mb_s(r1):.2f} (sample + BPE on the driver: {r2['sample_s'] + r2['bpe_s']:.0f} s of {r2['wall_s']:.0f} s)")
    bound = args.rss_bound_gb * gib
    for label, r, size in (("scaling corpus", r2, sizes["scaling"]), ("large corpus", rb, sizes["big"])):
        ok = "under" if r["peak_rss_bytes"] < bound else "OVER"
        print(f"  driver peak RSS, {label} ({size / 1e9:.2f} GB): {r['peak_rss_bytes'] / gib:.2f} GiB, "
              f"{ok} the {args.rss_bound_gb} GiB bound; {mb_s(r):.2f} MB/s")
    if r_old:
        print(f"  old path on the large corpus: {r_old['wall_s']:.0f} s ({mb_s(r_old):.2f} MB/s; BPE on all of "
              f"it {r_old['bpe_s']:.0f} s), peak RSS {r_old['peak_rss_bytes'] / gib:.2f} GiB; new/old wall "
              f"ratio {r_old['wall_s'] / rb['wall_s']:.2f}")


if __name__ == "__main__":
    main()
