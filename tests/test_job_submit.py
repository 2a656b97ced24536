"""`ray job submit` for real: a Ray head started on this machine, a smoke sweep submitted to it.

The head runs as cluster/ starts every head: token authentication on (RAY_AUTH_MODE=token, a token
generated for this head in RAY_AUTH_TOKEN, as KubeRay's authOptions sets them); a client without the
token is refused. The head runs from this venv's `ray` on free loopback ports, in its own temp dir (so no other Ray on
the machine finds it, and `ray stop`, which would stop every Ray here, is never needed): the fixture
starts `ray start --head --block` in its own session and ends it, and anything left of it, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import re
import time
import urllib.error
import urllib.request
import uuid

import pandas as pd
import pytest

from conftest import processes_using, CONF, ROOT, FAKE_SECRETS, end_head, free_ports, grep_tree

pytestmark = pytest.mark.ray
VENV_BIN = os.path.dirname(sys.executable)
RAY = os.path.join(VENV_BIN, "ray")
# The smoke preset cut to one budget and two sizes (46k and 87k parameters, 70 and 39 steps):
# two cells, trained at the same time on the head's 3 CPUs.
SWEEP = ["sweep=smoke", "sweep.budgets=[5e10]", "sweep.sizes=[3.5e4,9e4]", "fit.n_bootstrap=20",
         "data.max_bytes=2000000", "trainer.eval_tokens=16384",
         "trainer.eval_every=40", "trainer.log_every=40", "wandb.mode=offline"]


@contextlib.contextmanager
def started_head():
    """A Ray head (`ray start --head --block`) on free ports in its own temp dir; ended on exit."""
    # A short root: Ray's unix sockets live under it (paths must stay below ~107 characters).
    temp_dir = tempfile.mkdtemp(prefix="llmray-head-", dir="/tmp")
    gcs, dashboard, agent, client, agent_grpc, runtime_env_agent, metrics = free_ports(7)
    from ray._private.services import get_node_ip_address

    env = {**os.environ, **FAKE_SECRETS}  # as a cluster's environment holds them: must not leak
    env.update(
        # Every process of this head (raylet, workers, the job's driver) inherits the head's
        # address: with another Ray on the machine, Ray Train's state-API calls inside workers
        # would otherwise find two clusters and give up.
        RAY_ADDRESS=f"{get_node_ip_address()}:{gcs}",
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",  # the job's `python` is this venv's
        # Token auth as cluster/ turns it on (KubeRay's authOptions sets exactly these two).
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        WANDB_MODE="offline",
    )
    log = open(os.path.join(temp_dir, "head.log"), "wb")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--include-dashboard=true", "--num-cpus=3",
         f"--temp-dir={temp_dir}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}",
         "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, open(os.path.join(temp_dir, "head.log")).read()
            try:
                req = urllib.request.Request(f"{address}/api/jobs/",
                                             headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the Ray head's job API did not come up in 120 s"
            time.sleep(1)
        yield {"address": address, "env": env, "temp_dir": temp_dir}
    finally:
        end_head(proc, temp_dir)
        log.close()
        assert not processes_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def leaked_lines(root: str) -> list[str]:
    """`file: line` (secret redacted) for each line under root that holds a fake secret."""
    out = []
    for path in grep_tree(root, FAKE_SECRETS.values()):
        with open(path, errors="replace") as f:
            for line in f:
                for name, value in FAKE_SECRETS.items():
                    if value in line:
                        out.append(f"{os.path.relpath(path, root)}: {line.strip()[:300]}"
                                   .replace(value, f"<{name}>"))
    return out


@pytest.fixture(scope="module")
def ray_head():
    """One head for this file's tests (a head costs ~15 s to start and end)."""
    with started_head() as head:
        yield head


def without_token(env: dict, home: str) -> dict:
    """A client environment with no token anywhere: no RAY_AUTH_TOKEN(_PATH), and a HOME whose
    ~/.ray/auth_token does not exist (Ray's default token file)."""
    out = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    out["HOME"] = home
    return out


def submit_hello(head: dict, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, "job", "submit", "--address", head["address"], "--", "python", "-c", "print('hello from a job')"],
        env=env, capture_output=True, text=True, timeout=300)


def test_a_head_started_as_cluster_starts_it_refuses_a_job_without_the_token_and_runs_one_with_it(
        ray_head, tmp_path):
    """The job API answers 401 to a request with no token and 403 to a wrong one; `ray job submit` with auth
    switched off on the client, or with a wrong token, is refused and nothing runs; with the token
    the job runs to SUCCEEDED. (The one place a test turns auth off: on the client, to be refused.)"""
    address = ray_head["address"]
    for headers, code in (({}, 401), ({"Authorization": "Bearer " + "0" * 64}, 403)):
        req = urllib.request.Request(f"{address}/api/jobs/", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == code, headers

    home = str(tmp_path / "home")
    os.makedirs(home)
    no_token = without_token(ray_head["env"], home)
    for env in ({**no_token, "RAY_AUTH_MODE": "disabled"}, {**no_token, "RAY_AUTH_TOKEN": "0" * 64}):
        refused = submit_hello(ray_head, env)
        assert refused.returncode != 0
        assert "hello from a job" not in refused.stdout
        assert re.search(r"[Aa]uthenticat|401|403|[Uu]nauthori|[Ff]orbidden", refused.stdout + refused.stderr), \
            refused.stdout[-2000:] + refused.stderr[-2000:]

    accepted = submit_hello(ray_head, {**no_token, "RAY_AUTH_TOKEN": ray_head["env"]["RAY_AUTH_TOKEN"]})
    assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr[-3000:]
    assert "hello from a job" in accepted.stdout and "succeeded" in accepted.stdout.lower()
    req = urllib.request.Request(f"{address}/api/jobs/",
                                 headers={"Authorization": f"Bearer {ray_head['env']['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        jobs = json.loads(r.read())
    hello = [j["status"] for j in jobs if "hello from a job" in j["entrypoint"]]
    assert hello == ["SUCCEEDED"]  # the refused submissions left no job


def test_ray_job_submit_runs_a_smoke_sweep_on_a_head_started_by_hand(ray_head, tmp_path):
    """Submit the plain command (no `resources.address`: the driver joins the cluster named by the
    RAY_ADDRESS a Ray job sets, Ray's convention) with `--working-dir .` and cluster/runtime_env.yaml,
    wait for SUCCEEDED, then read the sweep's outputs from storage; no secret in the outputs, the
    job's logs or the head's logs."""
    out = tmp_path / "runs"
    sid = f"llm-ray-smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", ray_head["address"], "--submission-id", sid,
         "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--",
         "python", "-m", "llm_ray.sweep", *SWEEP,  # no address: the job's RAY_ADDRESS is joined
         f"trainer.storage_path={out}", f"hydra.run.dir={tmp_path}/hydra"],
        cwd=ROOT, env=ray_head["env"], capture_output=True, text=True, timeout=420)
    logs = submit.stdout + submit.stderr
    (tmp_path / "submit.log").write_text(logs)
    status = subprocess.run([RAY, "job", "status", "--address", ray_head["address"], sid],
                            env=ray_head["env"], capture_output=True, text=True, timeout=60)
    assert "succeeded" in status.stdout.lower(), logs[-6000:] + status.stdout + status.stderr
    assert submit.returncode == 0
    print(f"job {sid} succeeded in {time.time() - t0:.0f} s")

    # The driver joined the head rather than starting its own Ray, and trained every cell there.
    assert "Started a local Ray instance" not in logs
    assert "sweep: 0 cells already finished (kept), 2 to train" in logs
    sweep_dir = out / "smoke"
    df = pd.read_parquet(sweep_dir / "results.parquet")
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert df["cell_id"].nunique() == len(plan["cells"]) == 2
    assert set(df["status"]) == {"ok"}
    assert (sweep_dir / "report.md").read_text().startswith("# Scaling-law report")
    for cell in plan["cells"]:
        assert json.loads((sweep_dir / "cells" / cell / "result.json").read_text())["status"] == "ok"

    # Nor the cluster's Ray token in anything the sweep wrote or the job printed.
    assert grep_tree(str(tmp_path), [*FAKE_SECRETS.values(), ray_head["env"]["RAY_AUTH_TOKEN"]]) == []
    # The head's logs: the job driver's, every worker's, the dashboard's. (Its runtime_resources
    # hold the uploaded checkout, whose tests/conftest.py spells the fake secrets out.)
    logs_dir = os.path.join(ray_head["temp_dir"], "session_latest", "logs")
    assert any(n.startswith("job-driver-") for n in os.listdir(logs_dir))
    assert grep_tree(logs_dir, FAKE_SECRETS.values()) == [], leaked_lines(logs_dir)
