"""Branch points of a wsd_branches trunk: where a point lives and the file that marks it complete.
The vocabulary the driver (launch, sweeps.branches) and the workers (loop) share."""

from __future__ import annotations

from llm_ray.io import storage

POINT_DONE = "point.json"
"""Written last into a branch point, once every rank's files are there: a point without it is
incomplete and never read."""


def branch_point_url(trunk_dir: str, step: int) -> str:
    """Where a trunk's branch point after `step` optimizer steps lives."""
    return storage.join(trunk_dir, "points", f"step-{step:08d}")
