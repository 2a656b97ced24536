"""`python -m llm_ray.validate sweep_dir=DIR flops=[...]`: check a finished sweep's law on held-out budgets.

    python -m llm_ray.validate sweep_dir=/abs/runs/isoflop 'flops=[4e12]'

Re-fits the sweep's results exactly as its fit.json was made (no sweep cell is retrained), registers
the forecasts for each budget in predictions.json, trains the recommended models with the sweep's
recipe, and writes validation.json, validation.md (inlined into report.md) and validation.png.
A sweep with `sweep.validate_flops` does all of this itself after its fit.
"""

from __future__ import annotations

from omegaconf import DictConfig

from llm_ray.cli import command


def run_on_sweep(sweep_dir: str, flops: list, log=print) -> None:
    from llm_ray.stages.registry import get

    return get("validate").run(sweep_dir, list(flops), log=log)


@command("validate")
def main(cfg: DictConfig) -> None:
    from llm_ray.io.sweepdir import FIT, SweepDir

    sweep = SweepDir(str(cfg.sweep_dir))
    sweep.require(FIT)
    run_on_sweep(sweep.url, list(cfg.flops) or sweep.plan.sweep.held_out_budgets)


if __name__ == "__main__":
    main()
