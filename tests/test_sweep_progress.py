"""The sweep's ETA: FLOPs left over the rate so far, from the FLOPs each cell actually trained."""

from __future__ import annotations

import json

import pytest

from llm_ray.core.records import RunRecord
from llm_ray.sweeps.progress import Progress, trained_flops


def test_a_diverged_cell_counts_what_it_trained_and_drops_its_unspent_budget():
    # Two cells of 1e12 FLOPs, one after the other; the first diverges after 1e11 FLOPs and 10 s.
    p = Progress(total_cells=2, already_done=0, flops_total=2e12, t0=0.0)
    p.start("a", 1e12)
    p.report("a", 0.5e11)
    assert p.flops_left() == pytest.approx(1.95e12)
    p.close("a", 1e11)
    # 1e10 FLOP/s so far, 1e12 left: 100 s (counting its budget as spent would say 10 s).
    assert p.flops_left() == pytest.approx(1e12)
    assert p.eta_s(now=10.0) == pytest.approx(100.0)
    p.start("b", 1e12)
    p.report("b", 5e11)
    assert p.eta_s(now=60.0) == pytest.approx(60.0 * 5e11 / 6e11)
    assert p.line(now=60.0).startswith("sweep: 1/2 cells done, 1 running, 0 pending;")


def test_a_failed_cell_without_flops_counts_as_far_as_it_reported():
    p = Progress(total_cells=3, already_done=1, flops_total=2e12, t0=0.0)
    p.start("a", 1e12)
    p.report("a", 2e11)
    p.close("a", None)
    assert p.trained["a"] == 2e11 and p.flops_left() == pytest.approx(1e12)
    assert p.eta_s(now=20.0) == pytest.approx(100.0)
    assert "2/3 cells done, 0 running, 1 pending" in p.line(now=20.0)


def test_no_eta_before_any_flops():
    p = Progress(total_cells=1, already_done=0, flops_total=1e12, t0=0.0)
    assert "ETA nan min" in p.line(now=5.0)


def test_trained_flops_come_from_the_cells_result_json(tmp_path):
    cells = tmp_path / "cells"
    done = dict(params=1000, tokens=1e6, steps=10, model={"d_model": 8}, history=({"step": 10},))
    for cell_id, record in [("ok", RunRecord(run_id="ok", status="ok", flops_exact=9.8e11, **done)),
                            ("diverged", RunRecord(run_id="diverged", status="diverged", flops_exact=1.2e11)),
                            ("failed", RunRecord.failed("failed", "RuntimeError: boom", {}))]:
        (cells / cell_id).mkdir(parents=True)
        (cells / cell_id / "result.json").write_text(json.dumps(record.to_json()))
    assert trained_flops(str(cells), {"cell_id": "ok"}) == 9.8e11
    assert trained_flops(str(cells), {"cell_id": "diverged"}) == 1.2e11
    assert trained_flops(str(cells), {"cell_id": "failed"}) is None
    assert trained_flops(str(cells), {"cell_id": "never-ran"}) is None
