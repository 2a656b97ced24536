"""Learning-rate schedules as pure functions of the optimizer step: the math the engine applies.

Two schedules (`trainer.schedule`):
- `cosine`: linear warm-up, then cosine decay to lr * trainer.min_lr_ratio over the run's own steps
  (Hoffmann et al. 2022, Fig. A1: each run's schedule spans its own D). DeepSpeed's own
  `WarmupCosineLR`, rendered into its JSON config by `llm_ray.training.engine`.
- `wsd`: warm-up, stable, decay (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
  Beyond Fixed Training Durations", arXiv 2405.18392, Sec. 3): the same linear warm-up, then the
  peak lr held constant, then a cooldown over the last trainer.cooldown_fraction of the steps down
  to lr * trainer.cooldown_min_lr_ratio. Their findings: a cooldown of ~20% of the run matches a
  tuned cosine, and the (1-sqrt) shape beats linear (Sec. 3.1, Fig. 4-5); they cool down to zero
  (their code's `wsd_final_lr_scale`, "should be 0 here", repo epfml/schedules-and-scaling,
  src/main.py). DeepSpeed's JSON config has no such scheduler: the engine hands this function to
  `deepspeed.initialize` as a torch LambdaLR (DeepSpeed's idiom for a client schedule).

Because the stable phase does not depend on the run's length, every WSD run of one model up to its
cooldown start is the same run: one constant-lr trunk, checkpointed at each cooldown start, serves
every token count (`llm_ray.core.branches`).

Pure: no torch here.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "wsd")
COOLDOWN_SHAPES = ("1-sqrt", "linear")
WARMUP_MIN_RATIO = 0.01
"""Warm-up starts at 1% of the peak lr, both schedules (Hägele et al.'s init_div_factor=100)."""


def cooldown_steps(total_steps: int, fraction: float) -> int:
    """Steps of a WSD run's cooldown: round(fraction * total_steps)."""
    return int(round(fraction * total_steps))


def cooldown_start(total_steps: int, fraction: float) -> int:
    """The step at which a WSD run leaves its constant lr: the trunk step its branch starts from."""
    return total_steps - cooldown_steps(total_steps, fraction)


def wsd_factor(step: int, *, total_steps: int, warmup_steps: int, cooldown_fraction: float,
               cooldown_shape: str = "1-sqrt", final_ratio: float = 0.0) -> float:
    """lr(step) / peak lr of a WSD run; `step` counts the optimizer steps already taken (the factor
    applies to step number `step`, 0-based, and reaches `final_ratio` at step = total_steps).

        warm-up   step < W:            r0 + (1 - r0) * step / W,  r0 = WARMUP_MIN_RATIO, W = max(1, warmup_steps)
        stable    W <= step < s0:      1
        cooldown  s0 <= step <= S:     f + (1 - f) * g((step - s0) / (S - s0)),  f = final_ratio
                  g(x) = 1 - sqrt(x) (`1-sqrt`) or 1 - x (`linear`);  s0 = cooldown_start(S, fraction)

    With cooldown_fraction = 0 the run never leaves its peak lr: a trunk.
    """
    warm = max(1, warmup_steps)
    if step < warm:
        return WARMUP_MIN_RATIO + (1.0 - WARMUP_MIN_RATIO) * step / warm
    start = cooldown_start(total_steps, cooldown_fraction)
    if step < start or start >= total_steps:
        return 1.0
    x = min(1.0, (step - start) / (total_steps - start))
    g = 1.0 - math.sqrt(x) if cooldown_shape == "1-sqrt" else 1.0 - x
    return final_ratio + (1.0 - final_ratio) * g
