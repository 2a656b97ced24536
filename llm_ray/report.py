"""`python -m llm_ray.report sweep_dir=DIR [fit.key=value ...]`: re-fit and re-draw a sweep's report.

    python -m llm_ray.report sweep_dir=/abs/runs/isoflop                  # re-draw from results.parquet
    python -m llm_ray.report sweep_dir=/abs/runs/A,/abs/runs/B            # and overlay two sweeps

Reads only the sweep directory (llm_ray.io.sweepdir: results.parquet, plan.json, fit.json; never Ray
or torch): no retraining.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import command


@command("report")
def app(cfg: DictConfig) -> None:
    from llm_ray.reporting.fit import redraw

    dirs = cfg.sweep_dir if OmegaConf.is_list(cfg.sweep_dir) else [cfg.sweep_dir]
    redraw([str(d) for d in dirs], OmegaConf.to_object(cfg.fit), cfg.out_dir)


def sweep_dirs_as_list(argv: list[str]) -> list[str]:
    """Let `sweep_dir=A,B` mean a list: Hydra would read a bare comma as a multirun sweep."""
    return [f"sweep_dir=[{a.split('=', 1)[1]}]" if a.startswith("sweep_dir=") and "," in a
            and not a.split("=", 1)[1].startswith("[") else a for a in argv]


def main() -> None:
    sys.argv = sweep_dirs_as_list(sys.argv)
    app()


if __name__ == "__main__":
    main()
