"""Shared fixtures: one local Ray cluster per test session, test-sized configs, fake secrets, an S3
server on loopback, and ending a Ray node started by a test.

Fake secrets are put in the environment *before* Ray starts so every worker inherits them; tests
that write files then grep everything written for them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time

import pytest

FAKE_SECRETS = {
    "WANDB_API_KEY": "fake-wandb-key-0123456789abcdef0123456789abcdef01234567",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-DO-NOT-LEAK-4f1b2c",
}
BUCKET = "llm-ray-test"
ACCESS_KEY_ID = "FAKEKEYID0LLMRAY0TEST"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONF = os.path.join(ROOT, "llm_ray", "conf")

# Small real-text corpus for integration tests: the stdlib slice is read once and cached.
TEST_DATA = ["data.max_bytes=2000000", "data.vocab_size=1024"]
# The smoke preset: 2 budgets x 3 sizes of 16.8k-87.4k parameters.
SMOKE = ["sweep=smoke", "fit.n_bootstrap=20", "trainer.eval_every=40", "trainer.log_every=40"]


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from llm_ray.training.launch import RAY_ENV

    os.environ.update(FAKE_SECRETS)
    os.environ["WANDB_MODE"] = "offline"  # never reach the network with the fake key
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    # 2 workers + a Tune trial's driver need 3 CPU slots on a 2-core machine (STACK-NOTES).
    # tests/ on the workers' path too: tests/user_model.py holds models built by `model._target_`.
    path = os.pathsep.join(p for p in (os.path.dirname(__file__), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=max(3, (os.cpu_count() or 1) + 1), include_dashboard=False,
             runtime_env={"env_vars": {**RAY_ENV, "PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_sweep(ray_cluster, tmp_path_factory):
    """One smoke sweep (with seed replicates of each budget's minimum, W&B offline) for the whole
    session: tests read it; a stage that writes beside a sweep runs on a copy (copy_sweep), as a
    user's stage reads a finished sweep directory and nothing else."""
    from llm_ray.cli import compose_sweep
    from llm_ray.sweep import run_sweep

    tmp_path = tmp_path_factory.mktemp("smoke")
    return run_sweep(*compose_sweep(*SMOKE, "sweep.replicate_minima=1", f"trainer.storage_path={tmp_path}",
                                   "wandb.mode=offline")), tmp_path


def copy_sweep(sweep_dir: str, storage_path, leave_out: tuple = ()) -> str:
    """A finished sweep's directory copied under another storage path. A stage run on the copy writes
    its tables beside the copy; its W&B run goes beside the trials' runs (the folder the cells' records
    name), as on a user's sweep. leave_out: glob patterns of what not to copy (a stage's outputs)."""
    import shutil

    dst = os.path.join(storage_path, os.path.basename(sweep_dir))
    shutil.copytree(sweep_dir, dst, ignore=shutil.ignore_patterns(*leave_out))
    return dst


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


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def end_head(proc: subprocess.Popen, temp_dir: str) -> None:
    """End a Ray node started by a test (`ray start --block --temp-dir=temp_dir`) like `ray stop`
    would, but only this one: SIGTERM, by pid, every process that carries its temp dir (GCS,
    raylet, dashboard, workers; they are not all in the process group of `ray start`), SIGKILL after
    a grace period, and `ray start --block` itself (it only watches the others, and outlives
    SIGTERM)."""
    import psutil

    procs = [p for p in processes_using(temp_dir) if p.pid != proc.pid]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    psutil.wait_procs(procs, timeout=5)
    proc.kill()
    proc.wait()  # reaps it; its children are reaped by init from here on
    deadline = time.time() + 30
    while (left := processes_using(temp_dir)) and time.time() < deadline:
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        time.sleep(0.5)


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with a bucket (one per module)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"],
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", **{"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "us-east-1",
                          "aws_access_key_id": ACCESS_KEY_ID,
                          "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
                 ).create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The AWS environment pointing at the server: the only place credentials and endpoint come from."""
    import s3fs

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches instances, not the environment
    yield s3_server
    s3fs.S3FileSystem.clear_instance_cache()


def s3fs_fresh():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)
