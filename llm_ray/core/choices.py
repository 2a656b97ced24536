"""One check for a config field that names one of a fixed set (a schedule, a rule, a shape).

Pure: no torch, Ray, Hydra or W&B here.
"""

from __future__ import annotations

from typing import Iterable


def check_choice(field: str, value: str, choices: Iterable[str]) -> None:
    """ValueError naming the field, the value and the choices, unless `value` is one of them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{field}={value!r}: use one of {', '.join(choices)}.")
