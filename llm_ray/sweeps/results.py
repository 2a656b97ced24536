"""The results table: the contract between training and analysis.

One row per evaluation point per cell, with the columns the fitter reads (`params`, `tokens`,
`flops`, `loss`, `budget`, `run_id`, `step`, `status`) plus what a person wants beside them.
`loss` is the held-out validation loss in nats per token (`loss_se` its standard error over the
held-out windows), `bpb` the same loss in bits per byte of the
held-out text (comparable across tokenizers and corpora); `flops` is the exact ledger's count at
that point.
"""

from __future__ import annotations

import math

import pandas as pd

from llm_ray.core.records import RunRecord
from llm_ray.io import storage
from llm_ray.io.sweepdir import ROLES, SweepDir, fitted_rows, read_record_if_any  # noqa: F401 - callers' names

COLUMNS = [
    "cell_id", "run_id", "budget", "n_layer", "d_model", "n_head", "d_ff", "params",
    "params_non_embedding", "step", "tokens", "flops", "flops_kaplan", "flops_deepseek",
    "train_loss", "val_loss", "loss", "loss_se", "bpb", "lr", "final", "status", "reason", "wall_s", "tokens_per_s",
    "mfu", "epochs", "n_spikes", "role",
]


def collect_results(cells_dir: str, cells: dict, role: str = "sweep") -> pd.DataFrame:
    """Rows from every planned cell's RunRecord (result.json); cells without one appear as `missing`."""
    rows = []
    for cell_id, cell in cells.items():
        rec = (read_record_if_any(storage.join(cells_dir, cell_id))
               or RunRecord(run_id=cell_id, status="missing", reason="no result (not run or interrupted)"))
        rows += [{**row, "role": role} for row in cell_rows(cell_id, cell, rec)]
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = math.nan
    df = df[COLUMNS]
    # A cell's points are evaluated on partial schedules (the LR has not decayed), so only its
    # last point is an estimate of L(N, D); intermediate points serve approach 1's envelope.
    return df.sort_values(["budget", "params", "step"]).reset_index(drop=True)


def cell_rows(cell_id: str, cell, rec: RunRecord) -> list[dict]:
    """One row per evaluation point of a cell (one NaN row when it has none)."""
    base = {"cell_id": cell_id, "run_id": cell.name, "budget": cell.budget, "n_layer": cell.n_layer,
            "d_model": cell.d_model, "n_head": cell.n_head, "d_ff": cell.d_ff, "params": cell.params,
            "params_non_embedding": cell.params_non_embedding, "status": rec.status, "reason": rec.reason,
            "wall_s": rec.wall_s, "tokens_per_s": rec.tokens_per_s, "mfu": rec.mfu, "epochs": rec.epochs,
            "n_spikes": rec.n_spikes}
    evals = rec.eval_points()
    if not evals:
        return [{**base, "step": 0, "tokens": math.nan, "flops": math.nan, "loss": math.nan, "final": True}]
    last = evals[-1].step
    return [{**base, "step": p.step, "tokens": p.tokens, "flops": p.flops_exact, "flops_kaplan": p.flops_kaplan,
             "flops_deepseek": p.flops_deepseek, "train_loss": p.train_loss, "val_loss": p.val_loss,
             "loss": p.val_loss, "loss_se": p.val_loss_se, "bpb": p.val_bpb, "lr": p.lr, "final": p.step == last} for p in evals]


def write_results(df: pd.DataFrame, sweep_dir: str) -> None:
    """results.parquet and results.csv, each written whole (never a torn file)."""
    SweepDir(sweep_dir).write_results(df)


def read_results(sweep_dir: str) -> pd.DataFrame:
    return SweepDir(sweep_dir).results()
