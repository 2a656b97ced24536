"""Shared fixtures: one local Ray cluster per test session, test-sized configs, fake secrets.

Fake secrets are put in the environment *before* Ray starts so every worker inherits them; tests
that write files then grep everything written for them.
"""

from __future__ import annotations

import os

import pytest

FAKE_SECRETS = {
    "WANDB_API_KEY": "fake-wandb-key-0123456789abcdef0123456789abcdef01234567",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-DO-NOT-LEAK-4f1b2c",
}
CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "conf"))

# Small real-text corpus for integration tests: the stdlib slice is read once and cached.
TEST_DATA = ["data.max_bytes=2000000", "data.vocab_size=1024"]


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from llm_ray.training.launch import RAY_ENV

    os.environ.update(FAKE_SECRETS)
    os.environ["WANDB_MODE"] = "offline"  # never reach the network with the fake key
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    # 2 workers + a Tune trial's driver need 3 CPU slots on a 2-core machine (STACK-NOTES).
    ray.init(num_cpus=max(3, (os.cpu_count() or 1) + 1), include_dashboard=False,
             runtime_env={"env_vars": dict(RAY_ENV)})
    yield ray
    ray.shutdown()


def compose_train(*overrides: str):
    """The typed job config that `python -m llm_ray.train <overrides>` would run."""
    from llm_ray.cli import compose_train as compose

    return compose(*overrides)


def grep_tree(root: str, needles) -> list[str]:
    """Files under root containing any of the needles (bytes search, binary files included)."""
    hits = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    blob = f.read()
            except OSError:
                continue
            if any(n.encode() in blob for n in needles):
                hits.append(path)
    return hits


def processes_using(marker: str) -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(
                    marker in a for a in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
