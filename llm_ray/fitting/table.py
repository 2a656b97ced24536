"""Load the tidy table of measured points that every approach fits.

One row per measured point: N = `params`, D = `tokens`, C = `flops`, L = `loss`, and optionally the
IsoFLOP `budget` a run belongs to, its `run_id`, the `step` of an intermediate evaluation and the
run's `status`. Columns are renamed through `ColumnMap`, so other people's tables (e.g. "Model Size",
"Training FLOP") load unchanged. Rows are never dropped silently: rows with a failed status, a
NaN/inf loss, or removed by the `drop_top_loss` outlier rule are excluded and counted by reason.

Sources: a pandas DataFrame, or any fsspec URL (local path, s3://, gs://, memory://, ...) of a CSV
(optionally compressed) or Parquet file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np
import pandas as pd

from llm_ray.fitting.config import DEFAULT_COLUMNS, FitConfig

Source = Union[str, os.PathLike, pd.DataFrame]
CANONICAL = ("params", "tokens", "flops", "loss")
OPTIONAL = ("budget", "run_id", "step", "status")


@dataclass(frozen=True)
class FitTable:
    """The points left to fit, in canonical columns, and what was excluded on the way.

    `points` has columns params, tokens, flops, loss (float64), run_id (str), step (float, NaN when
    unknown), budget (object, None when unknown); every row is fitted by approach 1, and the final row
    of each run (its largest step, or largest D when there is no step) by approaches 2 and 3.
    """

    points: pd.DataFrame
    source: str
    n_rows: int
    """Rows in the table as read."""
    excluded: Mapping[str, int]
    """Excluded rows by reason, e.g. {"status=failed": 3, "nonfinite_loss": 1}."""
    present: Mapping[str, bool]
    """Which optional columns were found (budget, run_id, step, status)."""
    derived: str
    """"" or how a missing column was derived, e.g. "tokens = flops / (6 * params)"."""

    @property
    def n_excluded(self) -> int:
        return int(sum(self.excluded.values()))

    def final_points(self) -> pd.DataFrame:
        """The last measured point of each run (its largest step; ties and no step: largest D)."""
        order = self.points.sort_values(["run_id", "step", "tokens"], na_position="first", kind="stable")
        return order.groupby("run_id", sort=False).tail(1).sort_index()

    def summary(self) -> dict:
        """JSON-able description for fit.json."""
        final = self.final_points()
        ratio = final["flops"] / (final["params"] * final["tokens"])
        return {
            "source": self.source,
            "n_rows": self.n_rows,
            "n_used": int(len(self.points)),
            "n_runs": int(len(final)),
            "n_excluded": self.n_excluded,
            "excluded": dict(self.excluded),
            "optional_columns_found": dict(self.present),
            "derived": self.derived,
            "median_flops_per_param_token": float(np.median(ratio)),
        }


def read_table(source: Source, fmt: str = "auto") -> pd.DataFrame:
    """Read a CSV or Parquet table from a local path or any fsspec URL (or pass a DataFrame through)."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    import fsspec  # local import: the math modules do not need it

    url = os.fspath(source)
    name = url.lower().split("?")[0]
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        name = name.removesuffix(suffix)
    if fmt == "auto":
        if name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith((".csv", ".tsv", ".txt")):
            fmt = "csv"
        else:
            raise ValueError(f"results = {url!r}: cannot tell the format from the file name; "
                             'set fit.format to "csv" or "parquet".')
    try:
        with fsspec.open(url, "rb", compression="infer") as fh:
            if fmt == "parquet":
                return pd.read_parquet(fh)
            return pd.read_csv(fh, sep="\t" if name.endswith(".tsv") else ",")
    except FileNotFoundError as err:
        raise ValueError(f"results = {url!r}: no such file ({err}); pass an existing path or URL.") from err


def load_table(source: Source, cfg: FitConfig) -> FitTable:
    """Read, rename, exclude (counted) and validate; raises ValueError naming the problem."""
    raw = read_table(source, cfg.format)
    name = "<DataFrame>" if isinstance(source, pd.DataFrame) else os.fspath(source)
    cols = vars(cfg.columns)
    n_rows = len(raw)
    if n_rows == 0:
        raise ValueError(f"results = {name!r}: the table has no rows.")

    def has(field_name: str) -> bool:
        col = cols[field_name]
        return bool(col) and col in raw.columns

    for field_name in ("params", "loss"):
        if not has(field_name):
            raise ValueError(_missing(field_name, cols[field_name], raw.columns))
    if not has("tokens") and not has("flops"):
        raise ValueError(_missing("tokens", cols["tokens"], raw.columns)
                         + " (one of fit.columns.tokens and fit.columns.flops is needed; the other is"
                         " derived from C = k * N * D).")
    for field_name in OPTIONAL:
        col = cols[field_name]
        if col and col not in raw.columns and col != DEFAULT_COLUMNS[field_name]:
            raise ValueError(_missing(field_name, col, raw.columns)
                             + f' Set it to "" if the table has no {field_name}.')

    k = cfg.flops_per_param_token
    if k == "auto" and not (has("tokens") and has("flops")):
        raise ValueError("fit.flops_per_param_token=auto takes k in C = k N D from the table's own C / (N D), "
                         "which needs both a tokens and a flops column: set a number (e.g. 6.0).")
    out = pd.DataFrame(index=raw.index)
    out["params"] = _numeric(raw, cols["params"], "params")
    derived = ""
    if has("tokens"):
        out["tokens"] = _numeric(raw, cols["tokens"], "tokens")
    if has("flops"):
        out["flops"] = _numeric(raw, cols["flops"], "flops")
    if not has("tokens"):
        out["tokens"] = out["flops"] / (k * out["params"])
        derived = f"tokens = flops / ({k:g} * params)"
    if not has("flops"):
        out["flops"] = k * out["params"] * out["tokens"]
        derived = f"flops = {k:g} * params * tokens"
    out["loss"] = pd.to_numeric(raw[cols["loss"]], errors="coerce").astype(float)
    present = {f: has(f) for f in OPTIONAL}
    out["run_id"] = raw[cols["run_id"]].astype(str) if present["run_id"] else raw.index.astype(str)
    out["step"] = pd.to_numeric(raw[cols["step"]], errors="coerce") if present["step"] else np.nan
    out["budget"] = raw[cols["budget"]].astype(object) if present["budget"] else None

    excluded: dict[str, int] = {}
    keep = np.ones(len(out), dtype=bool)
    if present["status"]:
        status = raw[cols["status"]].astype(str)
        bad = ~status.isin([str(s) for s in cfg.ok_status]).to_numpy()
        for value, count in status[bad].value_counts().items():
            excluded[f"status={value}"] = int(count)
        keep &= ~bad
    nonfinite = keep & ~np.isfinite(out["loss"].to_numpy())
    if nonfinite.any():
        excluded["nonfinite_loss"] = int(nonfinite.sum())
    keep &= ~nonfinite
    out = out[keep]
    if cfg.drop_top_loss:
        worst_runs = (out.groupby("run_id")["loss"].min().sort_values(ascending=False)
                      .index[: cfg.drop_top_loss])
        dropped = out["run_id"].isin(worst_runs)
        excluded["drop_top_loss"] = int(dropped.sum())
        out = out[~dropped]
    if len(out) == 0:
        raise ValueError(f"results = {name!r}: no rows left to fit after exclusions {excluded} "
                         f"(of {n_rows} rows); check fit.ok_status and the loss column.")
    _validate_positive(out, name)
    return FitTable(points=out.reset_index(drop=True), source=name, n_rows=n_rows,
                    excluded=excluded, present=present, derived=derived)


def _missing(field_name: str, col: str, available) -> str:
    return (f"column {col!r} (fit.columns.{field_name}) is not in the table; available columns: "
            f"{list(available)}. Set fit.columns.{field_name} to the column that holds "
            f"{_MEANING[field_name]}.")


_MEANING = {
    "params": "the parameter count N",
    "tokens": "the training tokens D",
    "flops": "the training compute C in FLOPs",
    "loss": "the loss L",
    "budget": "the IsoFLOP budget of each run",
    "run_id": "the run identifier",
    "step": "the training step",
    "status": "the run status",
}


def _numeric(raw: pd.DataFrame, col: str, field_name: str) -> pd.Series:
    values = pd.to_numeric(raw[col], errors="coerce").astype(float)
    bad = values.isna() & raw[col].notna()
    if bad.any():
        raise ValueError(f"column {col!r} (fit.columns.{field_name}) has non-numeric values, e.g. "
                         f"{raw[col][bad].iloc[0]!r}; {_MEANING[field_name]} must be a number.")
    return values


def _validate_positive(points: pd.DataFrame, name: str) -> None:
    for field_name in ("params", "tokens", "flops", "loss"):
        values = points[field_name].to_numpy()
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            example = points.loc[bad, field_name].iloc[0]
            raise ValueError(f"results = {name!r}: {int(bad.sum())} fitted rows have a non-positive or "
                             f"missing {field_name} (e.g. {example!r}); {_MEANING[field_name]} must be "
                             "> 0 (exclude those rows, or mark their status as failed).")
