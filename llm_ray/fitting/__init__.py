"""Scaling-law fitting: the answer to "what N and D for my compute budget C, and what loss L?".

Pure numpy/scipy (no Ray, torch, W&B or Hydra). Three approaches of Hoffmann et al. 2022:
1. envelope of the lowest loss per compute level (`fit_envelope`),
2. IsoFLOP parabolas and power laws through their minima (`fit_isoflop`),
3. the parametric law L(N, D) = E + A / N^alpha + B / D^beta fitted as Epoch did (`fit_parametric`),
with bootstrap intervals over runs; `fit_all` + `summarize` do it all (the files are written by
`llm_ray.reporting.fit.run_fit`).
"""

from llm_ray.fitting.approaches import (EnvelopeFit, FrontierLaws, IsoFlopFit, IsoFlopGroup, PowerLaw,
                                        budget_groups, fit_envelope, fit_isoflop, fit_power_law)
from llm_ray.fitting.bootstrap import draw_run_counts, percentile_interval
from llm_ray.fitting.config import ColumnMap, FitConfig
from llm_ray.fitting.parametric import (ParametricFit, epoch_grid, fit_parametric, huber_objective, objective_at,
                                        refit_batch)
from llm_ray.fitting.pipeline import FitOutcome, fit_all, summarize
from llm_ray.fitting.predict import BudgetPrediction, LossPrediction, predict_budgets, predict_losses
from llm_ray.fitting.table import FitTable, load_table, read_table

__all__ = [
    "BudgetPrediction", "ColumnMap", "EnvelopeFit", "FitConfig", "FitOutcome", "FitTable", "FrontierLaws",
    "IsoFlopFit", "IsoFlopGroup", "LossPrediction", "ParametricFit", "PowerLaw", "budget_groups",
    "draw_run_counts", "epoch_grid", "fit_all", "fit_envelope", "fit_isoflop", "fit_parametric",
    "fit_power_law", "huber_objective", "load_table", "objective_at", "percentile_interval",
    "predict_budgets", "predict_losses", "read_table", "refit_batch", "summarize",
]
