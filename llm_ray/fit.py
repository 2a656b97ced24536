"""`python -m llm_ray.fit results=PATH [overrides]`: fit the scaling laws of a results table.

    python -m llm_ray.fit results=runs/sweep/results.parquet 'fit.predict_flops=[1e21,1e22]'
    python -m llm_ray.fit results=s3://bucket/their_runs.csv fit.columns.params="Model Size" \
        fit.columns.flops="Training FLOP" hydra.run.dir=/tmp/fit

Writes fit.json and the PNG plots into Hydra's output directory (`hydra.run.dir=` sets it) and prints
where they are and a short summary. The math lives in `llm_ray.fitting`; the files in
`llm_ray.reporting.fit`.
"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import command


@command("fit")
def main(cfg: DictConfig) -> None:
    from llm_ray.core.records import FitRecord
    from llm_ray.reporting.fit import run_fit
    from llm_ray.reporting.text import format_fit_summary

    if OmegaConf.is_missing(cfg, "results"):
        raise ValueError("results=PATH is required: a CSV or Parquet table (local path or fsspec URL).")
    results = str(cfg.results)
    if "://" not in results:
        results = to_absolute_path(results)
    out_dir = HydraConfig.get().runtime.output_dir
    res = run_fit(results, out_dir, OmegaConf.to_object(cfg.fit))
    print(format_fit_summary(FitRecord.from_json(res)))
    print(f"results: {out_dir}/fit.json; plots: {', '.join(res['plots']) or 'none'} in {out_dir}")


if __name__ == "__main__":
    main()
