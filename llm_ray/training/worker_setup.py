"""The set-up hook every Ray worker process of a local cluster runs when it starts.

Kept in a module of its own that imports nothing but `logging`: Ray runs the hook in every worker
process (trial actors, Ray Train's controller and workers, Ray Data tasks, idle workers it prestarts),
and importing it from `llm_ray.training.launch` cost each of them ~1.4 s of CPU (pandas, scipy
through the sweep directory's records) that most never use.
"""

from __future__ import annotations

import logging

# Ray's private module path (checked against Ray 2.60.0); tests/test_ray_internals.py fails loudly if it moves.
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_local_workers() -> None:
    """Local clusters run without the dashboard (it costs a fifth of a core at idle), so Ray Train's
    PlacementGroupCleaner cannot reach the state API and would print a warning every second for the
    whole run; its job (freeing a dead controller's placement group) is moot when the cluster lives
    and dies with the driver."""
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)
