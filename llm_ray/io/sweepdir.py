"""One reader for a sweep directory, local or remote: the hall every stage walks through.

    sweep = SweepDir("s3://bucket/runs/isoflop")
    sweep.plan                        PlanRecord (plan.json): the sweep's settings and planned cells
    sweep.cells(status="ok", weights=True)   the planned cells with their RunRecords, checked
    sweep.results() / .fitted()       results.parquet (every row / the rows the law is fitted on)
    sweep.fit / .fit_config(...)      FitRecord (fit.json) and the FitConfig it was made with
    sweep.registrations()             Registrations (predictions.json), in the order registered
    sweep.group                       the sweep's W&B group (its name)

Like Marin's `read_metrics_dataframe` beside its `IsoFlopRecord`: the files are read here and only
here, into the typed records of `llm_ray.core.records`; a stage never opens a sweep's JSON by hand.
Imports no torch, Ray or trainer (`llm_ray.training`): a stage reads a sweep without them.
"""

from __future__ import annotations

import io
from typing import Iterable, NamedTuple, Optional, Union

import pandas as pd

from llm_ray.core.plan import Cell
from llm_ray.core.records import (FINISHED, FinetuneResult, FitRecord, PlanRecord, Registration, RunRecord, parse_record,
                                  registrations_from_json, registrations_to_json)
from llm_ray.fitting.config import FitConfig
from llm_ray.io import storage

PLAN, FIT, RESULTS, PREDICTIONS, RESULT = "plan.json", "fit.json", "results.parquet", "predictions.json", "result.json"
ROLES = ("sweep", "validation")
"""results.parquet's `role`: `sweep` rows are fitted; `validation` rows (held-out budgets) never are."""


def read_record(run_dir: str) -> RunRecord:
    """A run's RunRecord (`<run_dir>/result.json`): the one reader of a run's record."""
    path = storage.join(run_dir, RESULT)
    fs, local = storage.fs_and_path(path)
    with fs.open(local, "rb") as f:
        return parse_record(f.read(), path)


def read_record_if_any(run_dir: str) -> Optional[RunRecord]:
    """The run's RunRecord, or None when it has none yet (not run, or interrupted)."""
    return read_record(run_dir) if storage.exists(storage.join(run_dir, RESULT)) else None


def read_finetune_result(out_dir: str) -> Optional[FinetuneResult]:
    """A downstream fine-tune's result (`<out_dir>/result.json`), None when it has none yet."""
    path = storage.join(out_dir, RESULT)
    return FinetuneResult.from_json(storage.read_json(path)) if storage.exists(path) else None


def is_finished(run_dir: str) -> bool:
    """The run has an answer (ok or diverged): a sweep never trains it again."""
    record = read_record_if_any(run_dir)
    return record is not None and record.finished


class SweepCell(NamedTuple):
    """A planned cell as the stages read it: its id, directory, the plan's Cell and its record."""

    cell_id: str
    run_dir: str
    cell: Cell
    record: Optional[RunRecord]
    """None when the cell has no result.json (not trained yet, or interrupted)."""

    @property
    def weights(self) -> Optional[str]:
        """URL of the cell's saved final weights, None when it saved none (or they are gone)."""
        if self.record is None or not self.record.weights:
            return None
        url = storage.join(self.run_dir, self.record.weights)
        return url if storage.exists(url) else None

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else "missing"

    def why_not(self) -> str:
        """Why the cell is left out of a stage that needs it finished ok."""
        if self.record is None:
            return "not trained yet"
        return f"{self.record.status}: {self.record.reason}"[:200]


Status = Union[None, str, Iterable[str]]


class SweepDir:
    """A sweep directory (`<storage_path>/<sweep.name>`), read as typed records."""

    def __init__(self, url: str):
        self.url = storage.to_local_or_url(str(url))
        self._plan: Optional[PlanRecord] = None

    def __repr__(self) -> str:
        return f"SweepDir({self.url!r})"

    def path(self, *parts: str) -> str:
        return storage.join(self.url, *parts)

    def has(self, name: str) -> bool:
        return storage.exists(self.path(name))

    def require(self, name: str) -> str:
        """The file's URL, or a ValueError that says what directory to give instead."""
        if not self.has(name):
            raise ValueError(f"sweep_dir={self.url!r} holds no {name}: give the directory a sweep wrote "
                             f"(<sweep.storage_path or trainer.storage_path>/<sweep.name>, printed as "
                             f"'sweep directory:' at its end).")
        return self.path(name)

    # ---- plan.json --------------------------------------------------------------------------------

    @property
    def plan(self) -> PlanRecord:
        if self._plan is None:
            self._plan = PlanRecord.from_json(storage.read_json(self.require(PLAN)))
        return self._plan

    def write_plan(self, plan: PlanRecord) -> None:
        storage.write_json(self.path(PLAN), plan.to_json())
        self._plan = plan

    @property
    def group(self) -> str:
        """The sweep's W&B group: its name (every trial, fit and stage run of the sweep is in it)."""
        return self.plan.name

    # ---- cells and their records ------------------------------------------------------------------

    def cells_dir(self, stage: str = "") -> str:
        return self.path(stage, "cells") if stage else self.path("cells")

    def record(self, cell_id: str, stage: str = "") -> Optional[RunRecord]:
        return read_record_if_any(storage.join(self.cells_dir(stage), cell_id))

    def cells(self, status: Status = None, weights: bool = False, need: str = "") -> list[SweepCell]:
        """The plan's cells in plan order with their records. `status`: keep only cells whose record has
        this status (a string, several, or `finished` for ok and diverged; None: every planned cell).
        `weights=True`: every kept cell must have its saved weights, else one ValueError naming them
        and the fix. `need`: what the caller does, for the error when no cell is left."""
        wanted = self._statuses(status)
        cells = [SweepCell(cid, storage.join(self.cells_dir(), cid), cell, self.record(cid))
                 for cid, cell in self.plan.cells.items()]
        kept = [c for c in cells if wanted is None or c.status in wanted]
        if need and not kept:
            raise ValueError(f"sweep_dir={self.url!r}: no cell finished {'/'.join(sorted(wanted or ()))}, nothing to "
                             f"{need} ({ {c.cell_id: c.why_not() for c in cells} }).")
        if weights:
            self.check_weights(kept)
        return kept

    def skipped(self, kept: list[SweepCell]) -> dict:
        """cell_id -> why, for the planned cells not in `kept`."""
        ids = {c.cell_id for c in kept}
        return {c.cell_id: c.why_not() for c in self.cells() if c.cell_id not in ids}

    @staticmethod
    def _statuses(status: Status) -> Optional[set]:
        if status is None:
            return None
        names = [status] if isinstance(status, str) else list(status)
        return {s for n in names for s in (FINISHED if n == "finished" else (n,))}

    def check_weights(self, cells: list[SweepCell]) -> None:
        missing = [c.cell_id for c in cells if c.weights is None]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(cells)} finished cells of {self.url} have no saved weights "
                f"(cells/<id>/weights.pt): {', '.join(missing)}. They were trained with trainer.save_weights=false "
                f"or by an llm-ray that did not save weights, and a finished cell is never retrained. To get them: "
                f"move those cells' directories out of {self.cells_dir()} and re-run the same sweep command "
                f"(trainer.save_weights=true, the default); only those cells train again.")

    def sections(self, names: Iterable[str]) -> tuple:
        """The text of those of `names` (the stages' report sections) present, in the order given."""
        found = []
        for name in names:
            if self.has(name):
                fs, p = storage.fs_and_path(self.path(name))
                found.append(fs.cat_file(p).decode())
        return tuple(found)

    # ---- results.parquet --------------------------------------------------------------------------

    def results(self) -> pd.DataFrame:
        """Every row of results.parquet (sweep and held-out rows; `role` says which)."""
        fs, path = storage.fs_and_path(self.require(RESULTS))
        with fs.open(path, "rb") as f:
            df = pd.read_parquet(io.BytesIO(f.read()))
        if "role" not in df:  # written before held-out validation existed: every row is a sweep row
            df["role"] = "sweep"
        return df

    def fitted(self) -> pd.DataFrame:
        """The rows a sweep's law is fitted on: its own cells, never the held-out runs."""
        return fitted_rows(self.results())

    def write_results(self, df: pd.DataFrame) -> None:
        """results.parquet and results.csv, each written whole (never a torn file)."""
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        storage.write_bytes_atomic(self.path(RESULTS), buf.getvalue())
        storage.write_bytes_atomic(self.path("results.csv"), df.to_csv(index=False).encode())

    # ---- fit.json ---------------------------------------------------------------------------------

    @property
    def fit(self) -> FitRecord:
        return FitRecord.from_json(storage.read_json(self.require(FIT)))

    def fit_config(self, **overrides) -> FitConfig:
        """The FitConfig the sweep's last fit was made with (`overrides` replace fields): its `config`
        alone, so a fit that failed, or a fit.json that holds only a config, still gives it."""
        return FitConfig.from_json(storage.read_json(self.require(FIT)).get("config") or {}, **overrides)

    # ---- predictions.json -------------------------------------------------------------------------

    def registrations(self) -> list[Registration]:
        if not self.has(PREDICTIONS):
            return []
        return registrations_from_json(storage.read_json(self.path(PREDICTIONS)))

    def register(self, new: list[Registration]) -> None:
        """Append registrations; those already there are never modified."""
        storage.write_json(self.path(PREDICTIONS), registrations_to_json(self.registrations() + list(new)))


def fitted_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows a sweep's law is fitted on: its own cells, never the held-out validation runs."""
    return df[df["role"] == "sweep"]
