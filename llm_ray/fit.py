"""`python -m llm_ray.fit results=PATH [overrides]`: fit the scaling laws of a results table.

    python -m llm_ray.fit results=runs/sweep/results.parquet 'fit.predict_flops=[1e21,1e22]'
    python -m llm_ray.fit results=s3://bucket/their_runs.csv fit.columns.params="Model Size" \
        fit.columns.flops="Training FLOP" hydra.run.dir=/tmp/fit

Writes fit.json and the PNG plots into Hydra's output directory (`hydra.run.dir=` sets it) and prints
where they are and a short summary. The math lives in `llm_ray.fitting` (no Hydra there); this module
only turns the composed config into a `FitConfig` and calls `run_fit`.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from llm_ray.fitting import FitConfig, run_fit


def register_configs() -> None:
    """Register FitConfig as the schema that conf/fit/default.yaml extends (type-checked overrides)."""
    ConfigStore.instance().store(group="fit", name="fit_schema", node=FitConfig)


register_configs()


def _interval(ci: dict | None, key: str, fmt: str) -> str:
    if not ci or ci.get(key) is None or None in ci[key]:
        return ""
    lo, hi = ci[key]
    return f" [{lo:{fmt}}, {hi:{fmt}}]"


def format_summary(res: dict) -> str:
    """A few lines a person reads: the law, the exponents, and what to train for each requested C."""
    lines = [f"points: {res['input']['n_used']} used ({res['input']['n_runs']} runs), "
             f"{res['n_excluded']} excluded {res['input']['excluded'] or ''}".rstrip()]
    level = int(round(100 * res["bootstrap"]["level"]))
    if res["bootstrap"]["n_resamples"]:
        lines.append(f"intervals: {level}% bootstrap over {res['bootstrap']['unit']}s "
                     f"({res['bootstrap']['n_resamples']} resamples)")
    for name, title in (("approach1", "Approach 1 (envelope)"), ("approach2", "Approach 2 (IsoFLOP)"),
                        ("approach3", "Approach 3 (parametric)")):
        entry = res[name]
        if entry["status"] != "ok":
            lines.append(f"{title}: skipped: {entry['reason']}")
            continue
        ci = entry.get("ci")
        text = f"{title}: a = {entry['a']:.4f}{_interval(ci, 'a', '.4f')}, b = {entry['b']:.4f}{_interval(ci, 'b', '.4f')}"
        if name == "approach3":
            text += (f"\n    L(N, D) = E + A/N^alpha + B/D^beta: E = {entry['E']:.4f}{_interval(ci, 'E', '.4f')}, "
                     f"A = {entry['A']:.4g}{_interval(ci, 'A', '.4g')}, B = {entry['B']:.4g}{_interval(ci, 'B', '.4g')}, "
                     f"alpha = {entry['alpha']:.4f}{_interval(ci, 'alpha', '.4f')}, "
                     f"beta = {entry['beta']:.4f}{_interval(ci, 'beta', '.4f')}"
                     f"\n    converged: {entry['converged']} (max|grad| = {entry['grad_norm']:.2g})")
        lines.append(text)
    for row in res["predictions"]:
        lines.append(f"C = {row['flops']:.3g} FLOPs:")
        for name in ("approach1", "approach2", "approach3"):
            p = row.get(name)
            if p is None:
                continue
            ci = p.get("ci")
            lines.append(f"    {name}: N_opt = {p['n_opt']:.3g}{_interval(ci, 'n_opt', '.3g')}, "
                         f"D_opt = {p['d_opt']:.3g}{_interval(ci, 'd_opt', '.3g')}, "
                         f"L = {p['loss']:.4f}{_interval(ci, 'loss', '.4f')}")
    for p in res.get("loss_predictions", []):
        lines.append(f"L(N={p['params']:.3g}, D={p['tokens']:.3g}) = {p['loss']:.4f}"
                     f"{_interval({'l': p.get('ci')}, 'l', '.4f')}")
    lines.extend(f"warning: {w}" for w in res["warnings"])
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="fit")
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "results"):
        print("llm_ray.fit: error: results=PATH is required: a CSV or Parquet table (local path or fsspec URL).",
              file=sys.stderr)
        sys.exit(2)
    results = str(cfg.results)
    if "://" not in results:
        results = to_absolute_path(results)
    out_dir = HydraConfig.get().runtime.output_dir
    try:
        fit_cfg = OmegaConf.to_object(cfg.fit)
        res = run_fit(results, out_dir, fit_cfg)
    except ValueError as err:
        print(f"llm_ray.fit: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(res))
    print(f"results: {out_dir}/fit.json; plots: {', '.join(res['plots']) or 'none'} in {out_dir}")


if __name__ == "__main__":
    main()
