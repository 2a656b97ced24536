"""What a Ray worker process pays at start-up for llm-ray's set-up hook, side by side in one run.

    python bench/bench_worker_start.py [--actors 4]

Ray runs a local cluster's `worker_process_setup_hook` in every worker process it starts (a sweep's
trial actors, Ray Train's controller and workers, Ray Data tasks). Two local clusters, one after the
other, each starting `--actors` actors one at a time (a new worker process each) and timing each from
creation to its first answer:
- `launch_module`: the hook as it was, imported from llm_ray.training.launch (which imports the
  sweep directory's records, pandas and scipy with it);
- `own_module`: the hook as it is, llm_ray.training.worker_setup (imports only `logging`).
Prints the median seconds per actor start and, on its last line, name=value.
"""

from __future__ import annotations

import argparse
import statistics
import time


def hook_in_launch_module() -> None:
    """The old hook: the same call, reached through llm_ray.training.launch's imports."""
    import llm_ray.training.launch  # noqa: F401 - the import is what is measured
    from llm_ray.training.worker_setup import quiet_local_workers

    quiet_local_workers()


def actor_starts(hook, n: int) -> list[float]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": hook})

    @ray.remote(num_cpus=1)
    class Probe:
        def ping(self) -> int:
            return 1

    try:
        ray.get(Probe.remote().ping.remote())  # the cluster warm: its first worker is not counted
        out = []
        for _ in range(n):
            t = time.perf_counter()
            actor = Probe.remote()
            ray.get(actor.ping.remote())
            out.append(time.perf_counter() - t)
            ray.kill(actor)  # a new process for the next one, as a trial's actor is not reused
        return out
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actors", type=int, default=4)
    args = ap.parse_args()
    hooks = {"launch_module": hook_in_launch_module,
             "own_module": "llm_ray.training.worker_setup.quiet_local_workers"}
    medians = {}
    for name, hook in hooks.items():
        times = actor_starts(hook, args.actors)
        medians[name] = statistics.median(times)
        print(f"{name:14s} actor start: median {medians[name]:.2f} s over {len(times)} "
              f"({', '.join(f'{t:.2f}' for t in times)})")
    ratio = medians["launch_module"] / medians["own_module"]
    print(f"launch_module_s={medians['launch_module']:.2f} own_module_s={medians['own_module']:.2f} "
          f"speedup={ratio:.2f}")


if __name__ == "__main__":
    main()
