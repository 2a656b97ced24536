"""The results table: the contract between training and analysis.

One row per evaluation point per cell, with the columns the fitter reads (`params`, `tokens`,
`flops`, `loss`, `budget`, `run_id`, `step`, `status`) plus what a person wants beside them.
`loss` is the held-out validation loss; `flops` is the exact ledger's count at that point.
"""

from __future__ import annotations

import io
import math

import pandas as pd

from llm_ray import storage

COLUMNS = [
    "cell_id", "run_id", "budget", "n_layer", "d_model", "n_head", "d_ff", "params",
    "params_non_embedding", "step", "tokens", "flops", "flops_kaplan", "flops_deepseek",
    "train_loss", "val_loss", "loss", "lr", "final", "status", "reason", "wall_s", "tokens_per_s",
    "mfu",
]


def collect_results(cells_dir: str, cells: dict) -> pd.DataFrame:
    """Rows from every planned cell's result.json; cells without one appear as `missing`."""
    rows = []
    for cell_id, cell in cells.items():
        path = storage.join(cells_dir, cell_id, "result.json")
        rec = storage.read_json(path) if storage.exists(path) else {
            "status": "missing", "reason": "no result (not run or interrupted)", "history": []}
        base = {"cell_id": cell_id, "run_id": cell.name, "budget": cell.budget,
                "n_layer": cell.n_layer, "d_model": cell.d_model, "n_head": cell.n_head,
                "d_ff": cell.d_ff, "params": cell.params,
                "params_non_embedding": cell.params_non_embedding, "status": rec["status"],
                "reason": rec.get("reason", ""), "wall_s": rec.get("wall_s"),
                "tokens_per_s": rec.get("tokens_per_s"), "mfu": rec.get("mfu")}
        # Step 0 (the untrained model, D = 0) is no point of L(N, D).
        evals = [r for r in rec.get("history", []) if "val_loss" in r and r["step"] > 0]
        if not evals:
            rows.append({**base, "step": 0, "tokens": math.nan, "flops": math.nan, "loss": math.nan,
                         "final": True})
            continue
        last = evals[-1]["step"]
        for r in evals:
            rows.append({**base, "step": r["step"], "tokens": r["tokens"], "flops": r["flops_exact"],
                         "flops_kaplan": r["flops_kaplan"], "flops_deepseek": r["flops_deepseek"],
                         "train_loss": r.get("train_loss", math.nan), "val_loss": r["val_loss"],
                         "loss": r["val_loss"], "lr": r.get("lr", math.nan), "final": r["step"] == last})
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = math.nan
    df = df[COLUMNS]
    # A cell's points are evaluated on partial schedules (the LR has not decayed), so only its
    # last point is an estimate of L(N, D); intermediate points serve approach 1's envelope.
    return df.sort_values(["budget", "params", "step"]).reset_index(drop=True)


def write_results(df: pd.DataFrame, sweep_dir: str) -> None:
    """results.parquet and results.csv, each written whole (never a torn file)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    storage.write_bytes_atomic(storage.join(sweep_dir, "results.parquet"), buf.getvalue())
    storage.write_bytes_atomic(storage.join(sweep_dir, "results.csv"), df.to_csv(index=False).encode())


def read_results(sweep_dir: str) -> pd.DataFrame:
    fs, path = storage.fs_and_path(storage.join(sweep_dir, "results.parquet"))
    with fs.open(path, "rb") as f:
        return pd.read_parquet(io.BytesIO(f.read()))
