"""The sweep directory as one reader (llm_ray.io.sweepdir.SweepDir) and its typed records: pure, fast.

A tiny synthetic sweep directory (a plan, cells whose losses follow a known law, the results table)
is written with the package's own writers and read back through SweepDir.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import pathlib

import pytest

from llm_ray.core.config import ModelConfig, TrainJobConfig
from llm_ray.core.plan import SweepConfig, plan_cells
from llm_ray.core.records import (DroppedRun, FinetuneResult, HeldOutRun, PlanRecord, Prediction, Registration, RunRecord,
                                  registrations_from_json, registrations_to_json)
from llm_ray.io import storage
from llm_ray.io.sweepdir import SweepDir

GRID = dict(seq_len=128, vocab_size=512, tie_embeddings=True, lr=3e-3, global_batch_tokens=2048,
            micro_batch_tokens=2048, warmup_steps=10, num_workers=1)
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "llm_ray"


def law(n: float, d: float) -> float:
    """A Chinchilla-shaped L(N, D) the synthetic cells follow."""
    return 1.7 + 400.0 / n ** 0.34 + 410.0 / d ** 0.28


def history(cell) -> tuple:
    steps = [cell.steps // 2, cell.steps]
    return tuple({"step": s, "tokens": s * cell.global_batch_tokens, "flops_exact": s * cell.global_batch_tokens
                  * cell.flops_per_token, "flops_kaplan": 6.0 * cell.params * s * cell.global_batch_tokens,
                  "flops_deepseek": 0.0, "val_loss": law(cell.params, s * cell.global_batch_tokens), "train_loss": 5.0,
                  "lr": 1e-3} for s in steps)


def record_of(cell_id: str, cell, sweep: str, status: str = "ok", weights: bool = True) -> RunRecord:
    model = ModelConfig(n_layer=cell.n_layer, d_model=cell.d_model, n_head=cell.n_head, d_ff=cell.d_ff,
                        seq_len=GRID["seq_len"], vocab_size=GRID["vocab_size"])
    return RunRecord(run_id=cell_id, status=status, params=cell.params, tokens=float(cell.tokens), steps=cell.steps,
                     flops_exact=cell.budget, final_val_loss=law(cell.params, cell.tokens),
                     weights="weights.pt" if weights else None,
                     cell={"cell_id": cell_id, "sweep": sweep, "name": cell.name, **dataclasses.asdict(cell)},
                     model=dataclasses.asdict(model),
                     job=dataclasses.asdict(dataclasses.replace(TrainJobConfig(), model=model)),
                     data={"key": "abc123", "tokenizer_path": "/nowhere/tokenizer.json"}, history=history(cell))


@pytest.fixture
def sweep_dir(tmp_path) -> str:
    """plan.json, cells/<id>/result.json (+ weights.pt), results.parquet; one cell diverged."""
    from llm_ray.sweeps.results import collect_results, write_results

    sweep = SweepConfig(name="tiny", budgets=[1e12, 3e12, 1e13], sizes=[2e4, 5e4, 1.2e5, 3e5],
                        tokens_per_param=[0.1, 1e4], min_tokens=1)
    cells, dropped = plan_cells(sweep, **GRID)
    ids = {f"{c.name}-{i:010d}": c for i, c in enumerate(cells)}
    d = SweepDir(str(tmp_path / "tiny"))
    d.write_plan(PlanRecord(sweep=sweep, cells=ids, train_tokens=10 ** 8, dropped=tuple(dropped), table="(table)",
                            flops_to_spend={"independent": 1.0}))
    for i, (cid, c) in enumerate(ids.items()):
        rec = record_of(cid, c, sweep.name, status="diverged" if i == 1 else "ok")
        storage.write_json(storage.join(d.cells_dir(), cid, "result.json"), rec.to_json())
        storage.write_bytes_atomic(storage.join(d.cells_dir(), cid, "weights.pt"), b"w")
    write_results(collect_results(d.cells_dir(), ids), d.url)
    return d.url


def test_every_record_reads_back_what_it_wrote(sweep_dir):
    d = SweepDir(sweep_dir)
    plan_json = storage.read_json(d.path("plan.json"))
    assert PlanRecord.from_json(plan_json).to_json() == plan_json
    for c in d.cells():
        raw = storage.read_json(storage.join(c.run_dir, "result.json"))
        assert json.dumps(RunRecord.from_json(raw).to_json(), sort_keys=True) == json.dumps(raw, sort_keys=True)
    (c, *_) = d.cells()
    for extra in ({"trunk": "trunk-1", "saves": [3, 5]}, {"trunk": "trunk-1", "branch_start": 4}, {"future": 1}):
        raw = record_of(c.cell_id, c.cell, "tiny").to_json()
        raw["cell"].update(extra)  # a wsd_branches carrier, a branch, a key a newer llm-ray wrote
        assert RunRecord.from_json(raw).to_json() == raw
    reg = Registration(fit_key="k", registered_at="2026-12-03T07:00:00+00:00", ci_level=0.9, flops=4e13,
                       frontier={"approach3": {"n_opt": 1e5}},
                       runs=(HeldOutRun("C4e13-N100k-1", ("approach3",), 1.0e5, next(iter(d.plan.cells.values())),
                                        {"approach3": Prediction("approach3", 3.1, (3.0, 3.2))}),),
                       dropped=(DroppedRun(5e5, ("approach2",), "too few steps"),))
    for raw in ({"row_id": "scratch-N20k", "kind": "scratch", "status": "failed", "reason": "OOM"},
                {"row_id": "C1e12-N20k-1", "kind": "pretrained", "status": "ok", "accuracy": 0.9, "accuracy_lo": 0.85,
                 "accuracy_hi": 0.94, "macro_f1": 0.9, "n": 100, "n_correct": 90, "n_train": 96, "train_s": 1.0,
                 "steps": 12, "train_loss": 0.3, "eval_s": 0.1, "pid": 7, "predictions": [0, 1, 1]}):
        assert FinetuneResult.from_json(raw).to_json() == raw
    book = json.loads(json.dumps(registrations_to_json([reg])))
    assert registrations_from_json(book) == [reg] and registrations_to_json(registrations_from_json(book)) == book


def test_a_record_gives_its_parts_typed(sweep_dir):
    (c, *_) = SweepDir(sweep_dir).cells(status="ok")
    r = c.record
    assert isinstance(r.job, TrainJobConfig) and r.job.model == r.model and r.model.d_model == c.cell.d_model
    assert r.cell.planned == c.cell and r.cell.budget == c.cell.budget and r.cell.name == c.cell.name
    assert r.data_key == "abc123"
    assert RunRecord(run_id="x", status="failed").job is None  # a run that failed before training


def test_cells_are_the_plans_in_order_filtered_by_status(sweep_dir):
    d = SweepDir(sweep_dir)
    every = d.cells()
    assert [c.cell_id for c in every] == list(d.plan.cells)
    ok = d.cells(status="ok")
    assert len(ok) == len(every) - 1 and all(c.record.status == "ok" for c in ok)
    assert len(d.cells(status="finished")) == len(every)
    assert list(d.skipped(ok).values()) == ["diverged: "]
    assert d.group == "tiny" == d.plan.sweep.name


def test_cells_without_weights_are_refused_with_one_message_naming_them_and_the_fix(sweep_dir):
    d = SweepDir(sweep_dir)
    victim = d.cells(status="ok")[2]
    os.remove(os.path.join(victim.run_dir, "weights.pt"))
    with pytest.raises(ValueError, match=rf"1 of \d+ finished cells .* no saved weights.*{victim.cell_id}.*"
                                         r"move those cells' directories.*trainer.save_weights=true"):
        d.cells(status="ok", weights=True)


def test_a_directory_that_is_no_sweep_is_named_with_the_file_it_lacks(tmp_path):
    with pytest.raises(ValueError, match=r"sweep_dir='.*' holds no plan.json: give the directory a sweep wrote"):
        SweepDir(str(tmp_path)).cells()
    assert SweepDir(str(tmp_path)).registrations() == []


def test_a_refit_with_the_recorded_config_gives_the_same_fit_json(sweep_dir, tmp_path):
    """The FitConfig read back from fit.json (SweepDir.fit_config) re-makes the fit bit for bit."""
    from llm_ray.fitting import FitConfig
    from llm_ray.reporting.fit import run_fit

    d = SweepDir(sweep_dir)
    cfg = FitConfig(flops_per_param_token="auto", n_bootstrap=16, keep_starts=5, predict_flops=[1e14], plots=False)
    first = run_fit(d.fitted(), d.url, cfg)
    again = run_fit(d.fitted(), str(tmp_path / "again"), d.fit_config())
    assert d.fit_config() == cfg.with_flops_per_param_token(d.fit.flops_per_param_token)  # `auto` as resolved
    assert not math.isnan(d.fit.approach("approach3").E) and d.fit.predict_flops == [1e14]
    drop = {"fit_seconds"}
    assert {k: v for k, v in first.items() if k not in drop} == {k: v for k, v in again.items() if k not in drop}


def json_reads(path: pathlib.Path) -> list[int]:
    """Lines of `path` that parse JSON from a file: json.load(s) or storage.read_json."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            if name == "read_json" or (owner == "json" and name in ("load", "loads")):
                out.append(node.lineno)
    return out


READERS = {"io/sweepdir.py", "io/storage.py", "core/records.py"}
"""The sweep directory's reader, the storage layer under it, and the record types."""
NOT_SWEEP_FILES = {"data/", "finetune/tasks.py",  # corpora, manifests, labelled task files
                   "stages/compress.py",  # its own rows (compress/<cell>/<setting>.json)
                   "io/lease.py"}  # the driver lease (driver.lease): coordination, no record of results


def test_no_sweep_file_is_parsed_outside_the_sweep_reader_and_the_records():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in READERS or any(rel.startswith(p) for p in NOT_SWEEP_FILES):
            continue
        if json_reads(path):
            found[rel] = json_reads(path)
    assert not found, f"JSON read outside llm_ray.io.sweepdir (go through SweepDir): {found}"


def test_no_stage_indexes_a_record_by_a_string_key():
    """`record.job["trainer"]`, `rec.model["vocab_size"]`, `.cell.get(...)`: the parts are typed."""
    bad = []
    for path in (PACKAGE / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.value if isinstance(node, ast.Subscript) else (
                node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" else None)
            if isinstance(target, ast.Attribute) and target.attr in ("cell", "model", "job", "deepspeed", "data") \
                    and isinstance(target.value, ast.Attribute) and target.value.attr == "record" \
                    or isinstance(target, ast.Attribute) and target.attr in ("cell", "model", "job", "deepspeed", "data") \
                    and getattr(target.value, "id", "") in ("record", "rec", "r"):
                bad.append(f"{path.name}:{node.lineno}")
    assert not bad, bad
