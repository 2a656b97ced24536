"""Loading the tidy table: fsspec URLs, CSV/Parquet, column mapping, counted exclusions, clear errors."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from llm_ray.fitting import ColumnMap, FitConfig, load_table

DATA = Path(__file__).parent / "data" / "chinchilla_epoch_svg.csv"  # Epoch AI's extraction of Chinchilla's runs


def sweep_rows() -> pd.DataFrame:
    """Two runs with two evaluations each, a failed and a diverged run, and a NaN loss."""
    return pd.DataFrame({
        "params": [1e8, 1e8, 2e8, 2e8, 4e8, 8e8, 3e8],
        "tokens": [1e9, 2e9, 1e9, 2e9, 1e9, 1e9, 1e9],
        "flops": [6e17, 12e17, 12e17, 24e17, 24e17, 48e17, 18e17],
        "loss": [3.2, 3.0, 3.1, 2.9, np.nan, np.inf, np.nan],
        "budget": [1.2e18, 1.2e18, 2.4e18, 2.4e18, 2.4e18, 4.8e18, 1.8e18],
        "run_id": ["r1", "r1", "r2", "r2", "r3", "r4", "r5"],
        "step": [10, 20, 10, 20, 20, 20, 20],
        "status": ["ok", "ok", "ok", "ok", "failed", "diverged", "ok"],
    })


def test_excluded_rows_are_counted_by_reason_not_silently_dropped():
    table = load_table(sweep_rows(), FitConfig())
    assert table.excluded == {"status=failed": 1, "status=diverged": 1, "nonfinite_loss": 1}
    assert table.n_excluded == 3 and table.n_rows == 7 and len(table.points) == 4
    assert table.summary()["n_excluded"] == 3


def test_final_point_of_each_run_is_its_last_step():
    final = load_table(sweep_rows(), FitConfig()).final_points()
    assert list(final["run_id"]) == ["r1", "r2"]
    assert list(final["step"]) == [20, 20] and list(final["loss"]) == [3.0, 2.9]


def test_reads_csv_and_parquet_from_fsspec_urls(tmp_path):
    df = sweep_rows()
    with fsspec.open("memory://fit-tests/sweep.csv", "w") as fh:
        df.to_csv(fh, index=False)
    df.to_parquet(tmp_path / "sweep.parquet")
    from_memory = load_table("memory://fit-tests/sweep.csv", FitConfig())
    from_parquet = load_table(f"file://{tmp_path}/sweep.parquet", FitConfig())
    pd.testing.assert_frame_equal(from_memory.points, from_parquet.points, check_dtype=False)


def test_other_peoples_column_names_load_through_the_column_map():
    theirs = pd.read_csv(DATA).rename(columns={"params": "Model Size", "flops": "Training FLOP", "loss": "Loss"})
    theirs = theirs.drop(columns=["tokens"])
    cfg = FitConfig(columns=ColumnMap(params="Model Size", flops="Training FLOP", loss="Loss", tokens="Training Tokens"))
    table = load_table(theirs, cfg)
    original = pd.read_csv(DATA)
    np.testing.assert_allclose(table.points["tokens"], original["tokens"], rtol=1e-9)  # D = C / (6 N)
    assert table.derived == "tokens = flops / (6 * params)"


def test_a_missing_column_names_the_field_the_fix_and_the_available_columns():
    df = sweep_rows().rename(columns={"params": "Model Size"})
    with pytest.raises(ValueError, match=r"'params' \(fit.columns.params\) is not in the table.*'Model Size'"):
        load_table(df, FitConfig())


def test_a_renamed_optional_column_that_is_missing_is_an_error():
    with pytest.raises(ValueError, match="fit.columns.budget"):
        load_table(sweep_rows(), FitConfig(columns=ColumnMap(budget="IsoFLOP budget")))


def test_non_positive_sizes_are_an_error_naming_the_column():
    df = sweep_rows()
    df.loc[0, "params"] = 0
    with pytest.raises(ValueError, match="non-positive or missing params"):
        load_table(df, FitConfig())


def test_a_table_with_nothing_left_after_exclusions_is_an_error_with_the_counts():
    df = sweep_rows()
    df["status"] = "failed"
    with pytest.raises(ValueError, match=r"no rows left to fit after exclusions \{'status=failed': 7\}"):
        load_table(df, FitConfig())


def test_epochs_outlier_rule_drops_the_five_highest_loss_runs():
    table = load_table(DATA, FitConfig(drop_top_loss=5))
    raw = pd.read_csv(DATA)
    assert len(table.points) == 240 and table.excluded == {"drop_top_loss": 5}
    assert table.points["loss"].max() < np.sort(raw["loss"])[-5]


def test_bad_config_values_are_errors_that_name_the_field():
    with pytest.raises(ValueError, match="fit.n_bootstrap"):
        FitConfig(n_bootstrap=-1)
    with pytest.raises(ValueError, match="fit.predict_flops"):
        FitConfig(predict_flops=[1e21, -1.0])
    with pytest.raises(ValueError, match="fit.ci_level"):
        FitConfig(ci_level=95)
    with pytest.raises(ValueError, match="fit.isoflop_min_sizes"):
        FitConfig(isoflop_min_sizes=2)
