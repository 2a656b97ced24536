"""`python -m llm_ray.fit` (Hydra) on Epoch AI's extraction of Chinchilla's runs (tests/data, a copy of
the published extraction; Besiroglu et al. 2024, epoch-research/analyzing-chinchilla), and the fitter's purity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "chinchilla_epoch_svg.csv"


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llm_ray.fit", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_cli_fits_chinchilla_and_writes_fit_json_plots_and_a_summary(tmp_path):
    out = tmp_path / "fitout"
    proc = run_cli(f"results={DATA.relative_to(REPO)}", "fit.drop_top_loss=5", "fit.n_bootstrap=20",
                   "fit.predict_flops=[1e21,1e22]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "fit.json").read_text())
    p3 = res["approach3"]
    assert p3["E"] == pytest.approx(1.8172, rel=0.005) and p3["alpha"] == pytest.approx(0.3478, abs=0.005)
    assert {"E", "A", "B", "alpha", "beta", "a", "b", "converged", "ci"} <= set(p3)
    assert {"a", "b", "ci"} <= set(res["approach1"]) and {"a", "b", "ci"} <= set(res["approach2"])
    assert res["n_excluded"] == 5
    assert [row["flops"] for row in res["predictions"]] == [1e21, 1e22]
    for name in ("isoflop.png", "n_d_opt.png", "loss_frontier.png", "residuals.png"):
        assert (out / name).stat().st_size > 10_000
    assert "E = 1.817" in proc.stdout and "C = 1e+22 FLOPs" in proc.stdout
    assert f"results: {out}/fit.json" in proc.stdout


def test_cli_maps_other_peoples_column_names(tmp_path):
    theirs = pd.read_csv(DATA).rename(columns={"params": "Model Size", "tokens": "Training Tokens",
                                               "flops": "Training FLOP", "loss": "Loss"})
    theirs.to_csv(tmp_path / "theirs.csv", index=False)
    proc = run_cli(f"results={tmp_path / 'theirs.csv'}", "fit.columns.params=Model Size",
                   "fit.columns.tokens=Training Tokens", "fit.columns.flops=Training FLOP", "fit.columns.loss=Loss",
                   "fit.n_bootstrap=0", "fit.plots=false", "fit.drop_top_loss=5", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "fit.json").read_text())["approach3"]["E"] == pytest.approx(1.8172, rel=0.005)


def test_cli_reports_a_misnamed_column_as_a_clear_error(tmp_path):
    proc = run_cli(f"results={DATA}", "fit.columns.params=Model Size", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "fit.columns.params" in proc.stderr and "available columns" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fitting_modules_import_no_ray_torch_wandb_or_hydra():
    code = ("import sys, llm_ray.fitting; bad = [m for m in ('ray', 'torch', 'wandb', 'hydra', 'deepspeed') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
