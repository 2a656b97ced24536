"""Fine-tune time per cell of a sweep, measured side by side with and without length bucketing.

    python bench/bench_downstream.py --sweep-dir runs/zh_sentiment [--epochs 1] [--threads 1]
    python bench/bench_downstream.py            # no sweep: the zh_sentiment experiment's shapes, fresh weights

For each distinct model shape (one cell per shape: the fine-tune cost does not depend on the weights),
one fine-tune of the downstream config's recipe on the task's training split, in this process with
`--threads` torch threads (what a Tune trial gets): with llm-ray's length-bucketed batches and with
plain random batches (each padded to its longest text), the ratio, then the test-set evaluation.
Prints the stage's fine-tune time per cell and the whole stage's estimate (cells + scratch twins over
the trials that run at once). Each fine-tune of the table is one in the stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The zh_sentiment experiment's shapes (conf/experiment/zh_sentiment.yaml), used without a sweep dir.
SHAPES = [dict(n_layer=1, d_model=32, n_head=2), dict(n_layer=2, d_model=48, n_head=3),
          dict(n_layer=2, d_model=64, n_head=4)]


def shapes_of(sweep_dir):
    """(label, model dict, number of cells with that shape) from a sweep's cells, else SHAPES."""
    if not sweep_dir:
        return [(f"{s['n_layer']}x{s['d_model']}", {**s, "seq_len": 128, "vocab_size": 1024}, 1) for s in SHAPES], None
    from llm_ray.stages.downstream import check_checkpoints, read_cells

    cells = read_cells(os.path.abspath(sweep_dir))
    shapes = {}
    for c in cells:
        model = dataclasses.asdict(c.record.model)
        shapes.setdefault(json.dumps(model, sort_keys=True), [c.cell_id.split("-")[1], model, 0])[2] += 1
    return [tuple(v) for v in shapes.values()], check_checkpoints(cells)


def tokenizer_without_sweep() -> str:
    """The experiment's tokenizer: People's Daily, BPE 1,024 (the data cache makes it once)."""
    from llm_ray.core.config import DataConfig
    from llm_ray.data import prepare_data

    cfg = DataConfig(sources=["peoples_daily"], max_bytes=None, vocab_size=1024)
    return prepare_data(cfg, os.path.expanduser("~/.cache/llm_ray/data"), log=lambda *a: None).tokenizer_path


def time_finetune(model_dict, train, train_labels, test, recipe, bucket_batches) -> tuple:
    from llm_ray.finetune.loop import finetune, predict
    from llm_ray.finetune.model import build_classifier

    model = build_classifier(model_dict, 2, recipe["pooling"], recipe["seed"])
    t0 = time.perf_counter()
    finetune(model, train, train_labels, recipe, bucket_batches=bucket_batches)
    t1 = time.perf_counter()
    predict(model, test)
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    import torch

    from llm_ray.finetune.config import DownstreamConfig
    from llm_ray.finetune.loop import encode
    from llm_ray.stages.downstream import load_splits

    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep-dir", default=None)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's (downstream.epochs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2, help="trials at once in the stage (2 on 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DownstreamConfig()
    recipe = {**cfg.recipe(), **({"epochs": args.epochs} if args.epochs else {})}
    shapes, tokenizer = shapes_of(args.sweep_dir)
    tokenizer = tokenizer or tokenizer_without_sweep()
    splits = load_splits(cfg)
    train = encode(tokenizer, splits.train_texts, cfg.max_tokens)
    test = encode(tokenizer, splits.test_texts, cfg.max_tokens)
    print(f"task {cfg.task}: {len(splits.train_texts)} train / {len(splits.test_texts)} test, mean "
          f"{train.lengths.mean():.0f} tokens (max {cfg.max_tokens}); {recipe['epochs']} epochs, batch "
          f"{recipe['batch_size']}, {args.threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    # One short fine-tune first, so that the first row does not pay for the process's warm-up.
    time_finetune(shapes[0][1], train, splits.train_labels, test, {**recipe, "epochs": 1}, bucket_batches=16)
    print(f"{'shape':>10} {'cells':>5} {'bucketed s':>10} {'random s':>9} {'ratio':>6} {'eval s':>7}")
    total = 0.0
    for label, model_dict, n_cells in shapes:
        fast, eval_s = time_finetune(model_dict, train, splits.train_labels, test, recipe, bucket_batches=16)
        slow, _ = time_finetune(model_dict, train, splits.train_labels, test, recipe, bucket_batches=1)
        print(f"{label:>10} {n_cells:>5} {fast:10.1f} {slow:9.1f} {slow / fast:6.2f} {eval_s:7.1f}")
        total += (n_cells + 1) * (fast + eval_s)  # each cell of this shape, and its from-scratch twin
    print(f"stage estimate: {total:.0f} s of fine-tuning over {args.concurrency} concurrent trials = "
          f"{total / args.concurrency / 60:.1f} min (+ ~10 s of Tune start-up); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
