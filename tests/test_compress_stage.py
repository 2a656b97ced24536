"""The compression stage for real: the session's smoke sweep trained by Ray Tune, then every cell
quantized and pruned by Ray tasks, the table, the laws, the report section, the plots and the W&B run;
resumed without evaluating anything twice; bad input refused before any work starts."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import CONF, ROOT, FAKE_SECRETS, SMOKE as SMOKE_SWEEP, copy_sweep, grep_tree
from wandb_reader import summarize

pytestmark = pytest.mark.ray
# The session's smoke sweep (2 budgets x 3 sizes, and each minimum again with another seed), and a
# short list of settings.
SMOKE = [*SMOKE_SWEEP, "wandb.mode=offline"]
SETTINGS = ["compress.group_bits=[4]", "compress.sparsities=[0.5]", "compress.n_bootstrap=50"]


def compose(*overrides):
    from llm_ray.cli import compose as hydra_compose

    return hydra_compose("sweep", [*SMOKE, *overrides])


@pytest.fixture(scope="module")
def compressed(smoke_sweep, tmp_path_factory):
    """The stage run on a copy of the smoke sweep exactly as `sweep.stages=[compress]` runs it."""
    from llm_ray.compress import run_on_sweep

    tmp = tmp_path_factory.mktemp("compress")
    sweep_dir = copy_sweep(smoke_sweep[0]["sweep_dir"], tmp)
    run = run_on_sweep(sweep_dir, compose(f"trainer.storage_path={tmp}", *SETTINGS))
    return tmp, sweep_dir, run


def test_every_cell_is_compressed_each_way_and_measured(compressed, smoke_sweep):
    from llm_ray.core.compression import Setting, model_bytes
    from llm_ray.training.launch import read_record

    _, sweep_dir, run = compressed
    df = pd.read_parquet(os.path.join(sweep_dir, "compress.parquet"))
    cells = list(smoke_sweep[0]["plan"].cells)  # the plan's cells; seed replicates measure noise only
    assert set(df["setting_id"]) == {"fp32", "rtn_channel-b8", "rtn_group-b4-g8", "prune_global-s0.5",
                                     "prune_layer-s0.5", "prune_2_4"}
    assert len(df) == len(cells) * 6 == len(run.evaluated) and set(df["cell_id"]) == set(cells)
    for col in ("cell_id", "params", "tokens", "flops", "method", "bits", "sparsity", "bytes", "val_loss", "delta_loss"):
        assert df[col].notna().all(), col
    fp32 = df[df["method"] == "fp32"]
    # A sweep cell's saved weights, reloaded, give its recorded validation loss.
    assert (fp32["val_loss"] - fp32["recorded_val_loss"]).abs().max() < 1e-5
    assert (fp32["delta_loss"] == 0).all() and (fp32["bytes"] == 4 * fp32["params"]).all()
    int8 = df[df["setting_id"] == "rtn_channel-b8"]
    assert (int8["rel_delta"].abs() < 0.01).all(), int8[["cell_id", "rel_delta"]]
    assert (df[df["method"] == "prune_global"]["delta_loss"] > int8["delta_loss"].max()).all()
    for r in df.itertuples():
        shape = read_record(os.path.join(sweep_dir, "cells", r.cell_id)).model.shape()
        group = None if pd.isna(r.group_size) else int(r.group_size)
        assert r.bytes == model_bytes(shape, Setting(r.method, int(r.bits), group, r.sparsity, r.embedding))
    assert (df[df["sparsity"] > 0]["zeros"] == (df[df["sparsity"] > 0]["target_weights"] / 2).round()).all()


def test_the_report_answers_for_memory_budgets_and_shows_the_plots(compressed):
    _, sweep_dir, run = compressed
    section = open(os.path.join(sweep_dir, "compress.md")).read()
    report = open(os.path.join(sweep_dir, "report.md")).read()
    assert section.strip() in report  # report.md inlines the stage's section
    answer = section.split("**The memory-constrained answer.**")[1].split("\n\n")[1]
    assert answer.count("- **≤ ") >= 3 and " at **" in answer
    assert "int8 per-channel** costs at most" in section and "Degradation laws" in section
    for png in ("compress_delta.png", "compress_memory.png", "compress_sparsity.png"):
        assert f"![{png}]({png})" in section and os.path.getsize(os.path.join(sweep_dir, png)) > 10_000
    laws = {law.name: law for law in run.laws}
    assert set(laws) >= {"rtn_channel-b8", "rtn_group-b4-g8", "prune_2_4"}


def test_the_stage_logs_a_compress_run_in_the_sweeps_wandb_group(compressed, smoke_sweep):
    tmp, _, run = compressed
    # Beside the trials' runs: the W&B folder their records name (the copied sweep's original one).
    trials_wandb = os.path.join(smoke_sweep[1], "wandb", "wandb", "offline-run-*", "*.wandb")
    runs = [summarize(f) for f in glob.glob(trials_wandb)]
    (stage,) = [r for r in runs if r["run"]["job_type"] == "compress"]
    assert stage["run"]["group"] == "smoke" and stage["run"]["name"] == "smoke-compress"
    for table in ("compress", "degradation_laws", "memory_answer"):
        assert stage["summary"][f"{table}/_type"] == "table-file"
    assert stage["summary"]["compress/nrows"] == len(run.table)
    assert any(k.startswith("plots/compress_memory/") for k in stage["summary"])
    assert grep_tree(str(tmp), FAKE_SECRETS.values()) == grep_tree(str(smoke_sweep[1]), FAKE_SECRETS.values()) == []


def test_a_rerun_evaluates_nothing_twice_and_added_settings_only(compressed):
    from llm_ray.compress import run_on_sweep

    tmp, sweep_dir, first = compressed
    rows = sorted(glob.glob(os.path.join(sweep_dir, "compress", "*", "*.json")))
    stamps = {p: os.stat(p).st_mtime_ns for p in rows}
    quiet = [f"trainer.storage_path={tmp}", "wandb.mode=disabled", *SETTINGS]
    again = run_on_sweep(sweep_dir, compose(*quiet), log=lambda *a: None)
    assert again.evaluated == [] and {p: os.stat(p).st_mtime_ns for p in rows} == stamps
    assert again.table["val_loss"].tolist() == first.table["val_loss"].tolist()
    more = run_on_sweep(sweep_dir, compose(*quiet, "compress.sparsities=[0.5,0.75]", "compress.methods=[prune_layer]"),
                        log=lambda *a: None)
    assert {s for _, s in more.evaluated} == {"prune_layer-s0.75"}
    assert len(more.evaluated) == first.table["cell_id"].nunique()
    assert {p: os.stat(p).st_mtime_ns for p in rows} == stamps


def test_cells_without_weights_are_named_before_anything_is_evaluated(compressed, smoke_sweep, tmp_path):
    from llm_ray.compress import run_on_sweep

    _, sweep_dir, _ = compressed
    copy = copy_sweep(sweep_dir, tmp_path, leave_out=("compress*", "tune"))
    cells = sorted(smoke_sweep[0]["plan"].cells)
    os.remove(os.path.join(copy, "cells", cells[0], "weights.pt"))
    with pytest.raises(ValueError, match=rf"1 of {len(cells)} finished cells .* no saved weights.*{cells[0]}.*"
                                         r"move those cells' directories"):
        run_on_sweep(copy, compose("wandb.mode=disabled", *SETTINGS))
    assert not os.path.exists(os.path.join(copy, "compress"))


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_bad_settings_fail_with_one_line_before_any_work(compressed, tmp_path):
    _, sweep_dir, _ = compressed
    proc = cli("llm_ray.compress", f"sweep_dir={sweep_dir}", "compress.group_size=12", f"hydra.run.dir={tmp_path}/h")
    assert proc.returncode == 2, proc.stderr
    assert "llm_ray.compress: error: cell C" in proc.stderr and "group_size=12 does not divide" in proc.stderr
    # A sweep with the stage refuses a bad compress setting before it trains anything.
    proc = cli("llm_ray.sweep", *SMOKE, "sweep.stages=[compress]", "compress.group_bits=[4,9]",
               f"trainer.storage_path={tmp_path}/runs", f"hydra.run.dir={tmp_path}/h2")
    assert proc.returncode == 2 and "compress.group_bits=[4, 9]: bit widths must be integers in {2..8}" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "runs"))
