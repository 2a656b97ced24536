"""The divergence rule: when a run is given up, and when a bad step is only a spike.

A run is `diverged` when
- its training loss is not finite (NaN or inf), or
- after warm-up, its smoothed training loss (an exponential moving average, which a single noisy
  batch cannot move far) stays above the loss it started from for `patience` consecutive steps:
  it has un-learned everything and is not coming back.
A step whose loss jumps above the moving average by more than `spike_nats` is a spike: counted
(result.json: n_spikes, max_spike) and the run goes on. Loss spikes that recover are common in
small-batch training (and in large runs: OLMo, PaLM report them); stopping at the first one (the
rule before) threw away runs that would have trained.

Pure: the state is rebuilt by replaying a resumed run's history, so nothing extra is checkpointed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass
class LossWatch:
    warmup_steps: int
    patience: int
    """Consecutive post-warm-up steps the smoothed loss may stay above its initial value."""
    spike_nats: float = 0.5
    smoothing: float = 0.9
    """EMA factor: ema <- smoothing * ema + (1 - smoothing) * loss."""
    initial: Optional[float] = None
    ema: Optional[float] = None
    above: int = 0
    n_spikes: int = 0
    max_spike: float = 0.0
    """Largest jump of a step's loss above the moving average seen so far, in nats."""

    def update(self, step: int, loss: float) -> Optional[str]:
        """Feed step `step`'s training loss; returns the reason when the run has diverged."""
        if not math.isfinite(loss):
            return f"train loss {loss} at step {step}"
        if self.initial is None:
            self.initial = self.ema = loss
            return None
        jump = loss - self.ema
        self.max_spike = max(self.max_spike, jump)
        if jump > self.spike_nats:
            self.n_spikes += 1
        self.ema = self.smoothing * self.ema + (1 - self.smoothing) * loss
        self.above = self.above + 1 if step > self.warmup_steps and self.ema > self.initial else 0
        if self.above >= self.patience:
            return (f"smoothed train loss {self.ema:.3f} stayed above its initial value {self.initial:.3f} "
                    f"for {self.above} steps (to step {step})")
        return None


def patience_steps(total_steps: int, fraction: float, minimum: int = 20) -> int:
    """How long a run may stay above its initial loss: `fraction` of its steps, at least `minimum`."""
    return max(minimum, int(math.ceil(fraction * total_steps)))
