"""`python -m llm_ray.compare sweep_dirs=[A,B]`: what is variant B worth in variant A's compute?

    python -m llm_ray.compare sweep_dirs=[/abs/runs/base,/abs/runs/variant] 'compare.target_flops=[1e14]'
    python -m llm_ray.compare +experiment=compare_beta2      # train both sweeps, then compare them

Reads two finished sweep directories (results, fit.json, a run's record; nothing is retrained) and
writes compare.json, compare.md and compare.png into `out_dir` (default: Hydra's output directory),
and a table to W&B. With `variants` (a named experiment sets them), each variant's sweep is run first
by `python -m llm_ray.sweep` with its overrides; a re-run trains only what is missing. The math is in
`llm_ray.fitting.compare`; reading and checking the sweeps in `llm_ray.stages.compare`.
"""

from __future__ import annotations

import subprocess
import sys

from omegaconf import DictConfig, OmegaConf

from llm_ray.cli import comma_list_as_list, command


def run_variants(variants: dict, common: list, log=print) -> list:
    """Each variant's sweep, one after the other, as `python -m llm_ray.sweep <common> <its overrides>`
    would run it (its own process: its own Ray and Hydra); returns their sweep directories."""
    dirs = []
    for label, overrides in variants.items():
        argv = [sys.executable, "-m", "llm_ray.sweep", *common, *overrides]
        log(f"compare: sweep {label}: python -m llm_ray.sweep {' '.join(argv[3:])}")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        found = None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("sweep directory: "):
                found = line.split(": ", 1)[1].strip()
        if proc.wait() != 0 or found is None:
            raise ValueError(f"variants.{label}: its sweep stopped (exit code {proc.returncode}); see its output "
                             f"above, fix it, and run the same command again (finished cells are kept).")
        dirs.append(found)
    return dirs


@command("compare")
def app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from llm_ray.io import storage
    from llm_ray.stages.compare import run_compare

    compare_cfg = OmegaConf.to_object(cfg.compare)
    variants = OmegaConf.to_container(cfg.variants, resolve=True)
    if variants and len(variants) != 2:
        raise ValueError(f"variants: give two (A, the baseline, then B), not {len(variants)}.")
    if variants and cfg.sweep_dirs:
        raise ValueError("give sweep_dirs=[A,B] (finished sweeps) or variants (sweeps to run), not both.")
    if not variants and len(cfg.sweep_dirs) != 2:
        raise ValueError("sweep_dirs=[A,B] is required: two finished sweep directories, A the baseline and B the "
                         "variant (or +experiment=compare_beta2 to run both).")
    dirs = run_variants(variants, list(cfg.common)) if variants else [str(d) for d in cfg.sweep_dirs]
    if variants and not compare_cfg.labels:
        compare_cfg.labels = list(variants)
    if cfg.out_dir:
        out_dir = storage.to_local_or_url(str(cfg.out_dir))
    elif variants:  # beside the sweeps it ran
        out_dir = storage.join(dirs[0].rstrip("/").rsplit("/", 1)[0], f"compare-{'-vs-'.join(compare_cfg.labels)}")
    else:
        out_dir = HydraConfig.get().runtime.output_dir
    run_compare(dirs, compare_cfg, out_dir, wandb_cfg=OmegaConf.to_object(cfg.wandb))
    print(f"compare: {out_dir}/compare.md, compare.json, compare.png")


def main() -> None:
    sys.argv = comma_list_as_list(sys.argv, "sweep_dirs")
    app()


if __name__ == "__main__":
    main()
