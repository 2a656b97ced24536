"""run_fit end to end on a sweep-shaped table: fit.json, plots, predictions, and independent failures."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pandas as pd
import pytest

from llm_ray.fitting import FitConfig
from llm_ray.reporting.fit import run_fit

LAW = dict(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.30)
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])


def law(n, d):
    return LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


def sweep_table(budgets=(1e18, 3e18, 1e19, 3e19, 1e20), n_sizes=7, sigma=0.003, seed=0) -> pd.DataFrame:
    """What the sweep writes: 3 evaluations per run, IsoFLOP ladders around the true N_opt, one failed
    and one diverged run."""
    rng = np.random.default_rng(seed)
    g = (LAW["alpha"] * LAW["A"] / (LAW["beta"] * LAW["B"])) ** (1 / (LAW["alpha"] + LAW["beta"]))
    rows = []
    for c in budgets:
        centre = np.log10(g * (c / 6) ** A_TRUE)
        for i, n in enumerate(10 ** np.linspace(centre - 0.7, centre + 0.7, n_sizes)):
            run = f"C{c:.0e}-N{n:.2e}"
            d_final = c / (6 * n)
            for step in (1, 2, 3):
                d = d_final * step / 3
                rows.append(dict(params=n, tokens=d, flops=6 * n * d, loss=law(n, d) * np.exp(rng.normal(0, sigma)),
                                 budget=c, run_id=run, step=100 * step, status="ok"))
    rows.append(dict(params=1e8, tokens=1e9, flops=6e17, loss=np.nan, budget=1e18, run_id="crashed", step=100,
                     status="failed"))
    rows.append(dict(params=1e8, tokens=1e9, flops=6e17, loss=np.inf, budget=1e18, run_id="blew-up", step=100,
                     status="diverged"))
    return pd.DataFrame(rows)


def strict_json(path):
    def reject(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_run_fit_writes_fit_json_for_a_sweep_table(tmp_path):
    cfg = FitConfig(n_bootstrap=30, predict_flops=[1e21, 1e22], predict_points=[[1e9, 2e10]], plots=False)
    res = run_fit(sweep_table(), str(tmp_path / "out"), cfg)
    on_disk = strict_json(tmp_path / "out" / "fit.json")
    assert on_disk["approach3"]["E"] == pytest.approx(res["approach3"]["E"])
    assert res["n_excluded"] == 2 and res["input"]["excluded"] == {"status=failed": 1, "status=diverged": 1}
    assert res["bootstrap"]["unit"] == "run_id"
    for name in ("approach1", "approach2", "approach3"):
        entry = res[name]
        assert entry["status"] == "ok", entry
        assert entry["ci"]["a"][0] <= entry["ci"]["a"][1] and entry["ci"]["b"][0] <= entry["ci"]["b"][1]
    assert res["approach2"]["a"] == pytest.approx(A_TRUE, abs=0.03)
    assert res["approach2"]["grouping"] == "by the budget column"
    assert len(res["approach2"]["used_budgets"]) == 5
    p3 = res["approach3"]
    assert p3["converged"] and set(p3["ci"]) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert p3["E"] == pytest.approx(LAW["E"], rel=0.05) and p3["a"] == pytest.approx(A_TRUE, abs=0.05)
    assert [row["flops"] for row in res["predictions"]] == [1e21, 1e22]
    for row in res["predictions"]:
        for name in ("approach1", "approach2", "approach3"):
            pred = row[name]
            assert pred["ci"]["n_opt"][0] <= pred["ci"]["n_opt"][1]
            assert pred["n_opt"] * pred["d_opt"] * 6 == pytest.approx(row["flops"], rel=0.1)
    assert res["loss_predictions"][0]["loss"] == pytest.approx(law(1e9, 2e10), rel=0.02)
    assert res["plots"] == []  # plots=False (the CLI test and the next one make them)


def test_approach_two_is_skipped_with_a_reason_when_there_is_one_budget_and_the_others_still_run(tmp_path):
    # One budget's envelope holds only 2 sizes: allow approach 1 two (the default needs 3, tested below).
    res = run_fit(sweep_table(budgets=(1e19,)), str(tmp_path), FitConfig(n_bootstrap=0, plots=True,
                                                                           envelope_min_sizes=2))
    assert res["approach2"] == {"status": "skipped", "reason": res["approach2"]["reason"]}
    assert "1 budget group" in res["approach2"]["reason"]
    assert res["approach1"]["status"] == "ok" and res["approach3"]["status"] == "ok"
    assert "ci" not in res["approach3"]
    assert res["plots"] == ["isoflop.png", "n_d_opt.png", "loss_frontier.png", "residuals.png"]  # plots still made
    for name in res["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_few_runs_skip_approaches_two_and_three_but_not_one_and_fit_json_goes_to_a_url():
    table = sweep_table(budgets=(1e18, 1e19), n_sizes=2)  # 4 runs, 2 sizes per budget
    res = run_fit(table, "memory://fit-tests/few", FitConfig(n_bootstrap=5, plots=False, predict_flops=[1e20]))
    with fsspec.open("memory://fit-tests/few/fit.json") as fh:
        assert json.load(fh)["approach3"]["status"] == "skipped"
    assert res["approach1"]["status"] == "ok"
    assert "fewer than the 5 parameters" in res["approach3"]["reason"]
    assert "2 distinct sizes N < 3" in res["approach2"]["reason"]
    assert set(res["predictions"][0]) == {"flops", "approach1"}


def test_a_table_that_cannot_be_fitted_at_all_raises_instead_of_writing_a_result(tmp_path):
    table = sweep_table().drop(columns=["loss"])
    with pytest.raises(ValueError, match="fit.columns.loss"):
        run_fit(table, str(tmp_path), FitConfig(plots=False))
    assert not (tmp_path / "fit.json").exists()


def test_approach_one_is_skipped_when_its_envelope_holds_fewer_than_three_sizes(tmp_path):
    table = sweep_table()
    table = table[table["params"] == table["params"].iloc[0]]  # one model size at every budget
    res = run_fit(table, str(tmp_path), FitConfig(n_bootstrap=0, plots=False))
    assert res["approach1"]["status"] == "skipped"
    assert "1 distinct model size" in res["approach1"]["reason"] and "at least 3" in res["approach1"]["reason"]


def test_fit_json_warns_when_one_size_sits_above_its_neighbours_at_several_budgets():
    from llm_ray.fitting import fit_all, summarize
    from test_fit_approaches import bumpy_profiles

    def warnings(bump):
        t = bumpy_profiles(bump).assign(run_id=lambda d: [f"r{i}" for i in range(len(d))], step=100, status="ok")
        return [w for w in summarize(fit_all(t, FitConfig(n_bootstrap=0, plots=False)))["warnings"]
                if "neighbouring sizes" in w]
    (w,) = warnings(0.3)
    assert w.startswith("N = 1.6e+04 lies above both neighbouring sizes at 3 budgets") and "trainer.seed" in w
    assert warnings(0.0) == []
