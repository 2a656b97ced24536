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


def run_on_sweep(sweep_dir: str, flops: list, log=print, sources: list | None = None) -> None:
    from llm_ray.stages.validate import run_validation, summary_line

    checks = run_validation(sweep_dir, [float(c) for c in flops], log=log, sources=sources)
    log(summary_line(checks) or "validation: no held-out run finished")
    log(f"validation: {sweep_dir}/validation.md (in report.md), validation.json, validation.png")


@command("validate")
def main(cfg: DictConfig) -> None:
    from llm_ray.core.plan import SweepConfig
    from llm_ray.io import storage

    sweep_dir = storage.to_local_or_url(str(cfg.sweep_dir))
    if not storage.exists(storage.join(sweep_dir, "fit.json")):
        raise ValueError(f"sweep_dir={sweep_dir!r} holds no fit.json: give the directory a finished sweep "
                         f"wrote (printed as 'sweep directory:' at its end).")
    plan = storage.read_json(storage.join(sweep_dir, "plan.json"))
    flops = list(cfg.flops) or SweepConfig(**plan["sweep"]).held_out_budgets
    run_on_sweep(sweep_dir, flops)


if __name__ == "__main__":
    main()
