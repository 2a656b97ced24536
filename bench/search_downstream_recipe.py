"""The small search that chose the downstream stage's one fine-tuning recipe (README, "Downstream").

    python bench/search_downstream_recipe.py --cell-dir runs/zh_sentiment/cells/C1e12-N112k-b9fab79e45

One pre-trained cell and its from-scratch twin (same shape, fresh weights), fine-tuned on the task's
training split and scored on a dev split of 1,000 further texts (balanced, disjoint from train and
test: the test split is never looked at), over a grid of peak learning rates x epochs x pooling.
Prints a table of dev accuracies; the recipe is the grid point best for the pre-trained cell (ties:
the cheaper one), and the scratch column shows the twin was not starved by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import torch

    from llm_ray.data import PreparedData
    from llm_ray.finetune.config import DownstreamConfig
    from llm_ray.finetune.loop import encode, finetune, predict
    from llm_ray.finetune.model import build_classifier
    from llm_ray.finetune.tasks import load_records, split_records
    from llm_ray.fitting.downstream import classification_scores
    from llm_ray.io.sweepdir import read_record

    ap = argparse.ArgumentParser()
    ap.add_argument("--cell-dir", required=True)
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    ap.add_argument("--epochs", default="2,4")
    ap.add_argument("--poolings", default="mean,last")
    ap.add_argument("--n-dev", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = read_record(args.cell_dir)
    cfg = DownstreamConfig()
    splits = split_records(load_records(cfg.task), n_train=cfg.n_train, n_test=cfg.n_test, n_dev=args.n_dev,
                           seed=cfg.split_seed, task=cfg.task)
    tok = PreparedData.from_dict(rec.data).tokenizer_path
    train, dev = encode(tok, splits.train_texts, cfg.max_tokens), encode(tok, splits.dev_texts, cfg.max_tokens)
    print(f"cell {rec.run_id} (N = {rec.params:,}, final val loss {rec.final_val_loss:.3f}); {len(splits.train_texts)} "
          f"train / {len(splits.dev_texts)} dev; load average {os.getloadavg()[0]:.1f}")
    print(f"{'lr':>7} {'epochs':>6} {'pooling':>7} {'pre-trained dev acc':>20} {'scratch dev acc':>16} {'s':>5}")
    grid = itertools.product([float(x) for x in args.lrs.split(",")], [int(x) for x in args.epochs.split(",")],
                             args.poolings.split(","))
    for lr, epochs, pooling in grid:
        recipe = {**cfg.recipe(), "lr": lr, "epochs": epochs, "pooling": pooling}
        accs, t0 = [], time.perf_counter()
        for weights in (os.path.join(args.cell_dir, rec.weights), None):
            model = build_classifier(dataclasses.asdict(rec.model), len(splits.classes), pooling, cfg.seed, weights)
            finetune(model, train, splits.train_labels, recipe)
            s = classification_scores(splits.dev_labels, predict(model, dev), len(splits.classes), cfg.ci_level)
            accs.append(f"{100 * s.accuracy:.1f} [{100 * s.accuracy_lo:.1f}, {100 * s.accuracy_hi:.1f}]")
        print(f"{lr:7.0e} {epochs:6d} {pooling:>7} {accs[0]:>20} {accs[1]:>16} {time.perf_counter() - t0:5.0f}",
              flush=True)


if __name__ == "__main__":
    main()
