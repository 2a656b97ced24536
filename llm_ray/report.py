"""`python -m llm_ray.report sweep_dir=DIR [fit.key=value ...]`: re-fit and re-draw a sweep's report.

    python -m llm_ray.report sweep_dir=/abs/runs/isoflop                  # re-draw from results.parquet
    python -m llm_ray.report sweep_dir=/abs/runs/A,/abs/runs/B            # and overlay two sweeps

Reads only the sweep directory (llm_ray.io.sweepdir: results.parquet, plan.json, fit.json; never Ray
or torch): no retraining.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import comma_list_as_list, command


@command("report")
def app(cfg: DictConfig) -> None:
    from llm_ray.reporting.fit import redraw

    dirs = cfg.sweep_dir if OmegaConf.is_list(cfg.sweep_dir) else [cfg.sweep_dir]
    redraw([str(d) for d in dirs], OmegaConf.to_object(cfg.fit), cfg.out_dir)


def main() -> None:
    sys.argv = comma_list_as_list(sys.argv, "sweep_dir")
    app()


if __name__ == "__main__":
    main()
