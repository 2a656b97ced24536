"""W&B the way W&B documents it, and tracking that never costs a run.

W&B's environment variables (WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY, WANDB_DIR) fill what the
config leaves unset, and an explicit override wins; an online run whose server does not answer logs
offline and says so in one line. The W&B runs here are real (wandb's own client and service process)
against servers on loopback: a closed port, a port that accepts and never answers, and an HTTP
server that answers every request with an error. No test reaches the network.
"""

from __future__ import annotations

import contextlib
import glob
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from conftest import CONF, ROOT, FAKE_SECRETS, grep_tree

WANDB_VARS = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "WANDB_API_KEY", "WANDB_BASE_URL",
              "WANDB_INIT_TIMEOUT", "WANDB_FINISH_TIMEOUT")
WARNING = re.compile(r"llm_ray: W&B: (.*) did not answer \((.*); ([0-9.]+) s\); run (\S+) logs offline instead: "
                     r"upload it later with `wandb sync (\S+)`")


@pytest.fixture
def clean_env(monkeypatch):
    for k in WANDB_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------------------------
# The environment under the overrides (pure: milliseconds)
# ---------------------------------------------------------------------------------------------

def test_auto_defers_to_wandb_mode_and_an_explicit_mode_wins(clean_env):
    from llm_ray.io.tracking import resolve_mode

    assert resolve_mode("auto") == "offline"
    clean_env.setenv("WANDB_API_KEY", FAKE_SECRETS["WANDB_API_KEY"])
    assert resolve_mode("auto") == "online"
    for env, mode in [("offline", "offline"), ("disabled", "disabled"), ("dryrun", "offline"), ("online", "online")]:
        clean_env.setenv("WANDB_MODE", env)
        assert resolve_mode("auto") == mode
    clean_env.setenv("WANDB_MODE", "offline")
    assert resolve_mode("online") == "online" and resolve_mode("disabled") == "disabled"
    clean_env.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'.*online, offline or disabled"):
        resolve_mode("auto")


def test_wandb_variables_fill_what_the_config_leaves_unset(clean_env, tmp_path):
    from llm_ray.core.config import WandbConfig
    from llm_ray.io.tracking import resolve

    assert resolve(WandbConfig(), default_dir="/runs/wandb") == WandbConfig(
        mode="offline", project="llm-ray", entity=None, dir="/runs/wandb")
    clean_env.setenv("WANDB_PROJECT", "their-project")
    clean_env.setenv("WANDB_ENTITY", "their-team")
    clean_env.setenv("WANDB_DIR", str(tmp_path))
    clean_env.setenv("WANDB_MODE", "disabled")
    assert resolve(WandbConfig(), default_dir="/runs/wandb") == WandbConfig(
        mode="disabled", project="their-project", entity="their-team", dir=str(tmp_path))
    explicit = WandbConfig(mode="offline", project="p", entity="e", dir="/d", group="g")
    assert resolve(explicit, default_dir="/runs/wandb") == explicit


def test_a_run_resolves_the_drivers_environment_once(clean_env, tmp_path):
    """resolve_paths (the driver) writes the resolved values into the job the workers receive:
    WANDB_DIR beats the `<storage>/wandb` default, a wandb.dir override beats WANDB_DIR."""
    from llm_ray.cli import compose_train
    from llm_ray.training.launch import resolve_paths

    job = resolve_paths(compose_train(f"trainer.storage_path={tmp_path}"))
    assert (job.wandb.mode, job.wandb.project, job.wandb.dir) == ("offline", "llm-ray", f"{tmp_path}/wandb")
    clean_env.setenv("WANDB_DIR", "/elsewhere")
    clean_env.setenv("WANDB_MODE", "disabled")
    assert resolve_paths(compose_train(f"trainer.storage_path={tmp_path}")).wandb.dir == "/elsewhere"
    job = resolve_paths(compose_train(f"trainer.storage_path={tmp_path}", "wandb.dir=/mine", "wandb.mode=offline"))
    assert (job.wandb.dir, job.wandb.mode) == ("/mine", "offline")


# ---------------------------------------------------------------------------------------------
# Real W&B runs against loopback servers
# ---------------------------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_server():
    """Accepts every connection and never answers; counts the connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held = []

    def accept():
        with contextlib.suppress(OSError):
            while True:
                held.append(srv.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield srv.getsockname()[1], held
    finally:
        srv.close()
        for c in held:
            c.close()


@contextlib.contextmanager
def failing_server():
    """Answers every request at once with HTTP 503, so the probe passes and wandb.init fails."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            self.send_response(503)
            self.end_headers()

        do_GET = do_POST = do_HEAD = _fail

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()


START_RUN = """
import json, sys, time
from llm_ray.core.config import WandbConfig
from llm_ray.io.tracking import start_run
t = time.monotonic()
run = start_run(WandbConfig(mode=sys.argv[1], dir=sys.argv[2], group="g"), name="C1e12-N10k", key="k",
                job_type="trial", config={"cell": {"budget": 1e12}})
start_s = time.monotonic() - t
run.log({"step": 1, "train/loss": 5.0})
run.finish()
print(json.dumps({"start_s": start_s, "mode": run.settings.mode, "sync_dir": run.settings.sync_dir}))
"""


def start_run_in_subprocess(mode: str, directory: str, **env) -> tuple[dict, list[str]]:
    """A fresh process, as a trial is: (what start_run gave, the lines it printed on stderr)."""
    full_env = {k: v for k, v in os.environ.items() if k not in WANDB_VARS}
    full_env.update(PYTHONPATH=ROOT, WANDB_API_KEY=FAKE_SECRETS["WANDB_API_KEY"], **env)
    proc = subprocess.run([sys.executable, "-c", START_RUN, mode, directory], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), [ln for ln in proc.stderr.splitlines() if ln.strip()]


def assert_offline_files(result: dict, directory) -> None:
    assert result["mode"] == "offline"
    assert result["sync_dir"].startswith(str(directory)) and os.path.basename(result["sync_dir"]).startswith("offline-run-")
    assert glob.glob(os.path.join(result["sync_dir"], "*.wandb"))
    assert grep_tree(str(directory), FAKE_SECRETS.values()) == []


def test_wandb_mode_offline_with_a_key_writes_offline_files_and_never_connects(tmp_path):
    with silent_server() as (port, connections):
        result, lines = start_run_in_subprocess("auto", str(tmp_path), WANDB_MODE="offline",
                                                WANDB_BASE_URL=f"http://127.0.0.1:{port}")
        assert connections == []
    assert_offline_files(result, tmp_path)
    assert not [ln for ln in lines if "llm_ray:" in ln]


@pytest.mark.parametrize("server", ["closed port", "never answers"])
def test_an_unreachable_server_costs_one_line_and_a_bounded_wait(server, tmp_path):
    from llm_ray.io.tracking import PROBE_TIMEOUT_S

    with contextlib.ExitStack() as stack:
        port = closed_port() if server == "closed port" else stack.enter_context(silent_server())[0]
        result, lines = start_run_in_subprocess("online", str(tmp_path), WANDB_BASE_URL=f"http://127.0.0.1:{port}")
    assert_offline_files(result, tmp_path)
    (warning,) = [ln for ln in lines if "llm_ray:" in ln]
    m = WARNING.fullmatch(warning)
    assert m and m.group(1) == f"http://127.0.0.1:{port}" and m.group(4) == "C1e12-N10k"
    assert m.group(5) == result["sync_dir"]
    # The extra time the outage cost this run: the probe's, bounded by PROBE_TIMEOUT_S.
    waited = float(m.group(3))
    print(f"{server}: went offline after {waited:.1f} s; start_run took {result['start_s']:.1f} s in all")
    assert waited <= PROBE_TIMEOUT_S + 3
    assert re.search("Connection refused" if server == "closed port" else "timed out|no answer", m.group(2))


def test_a_failed_online_init_falls_back_offline_in_the_same_process(tmp_path):
    """The server answers (so the probe passes) but wandb.init cannot start a run: after W&B's own
    init_timeout (WANDB_INIT_TIMEOUT, W&B's variable, respected) the run logs offline."""
    with failing_server() as port:
        result, lines = start_run_in_subprocess("online", str(tmp_path), WANDB_BASE_URL=f"http://127.0.0.1:{port}",
                                                WANDB_INIT_TIMEOUT="5")
    assert_offline_files(result, tmp_path)
    said = [ln for ln in lines if "llm_ray:" in ln]
    # One line; two when W&B's service still held the id under load and the run took a fresh one.
    held = [ln for ln in said if "logs offline as" in ln]
    assert len(said) - len(held) == 1 and len(held) <= 1, said
    (warning,) = [ln for ln in said if ln not in held]
    m = re.search(r"wandb.init failed \(.*; ([0-9.]+) s\); run C1e12-N10k logs offline instead", warning)
    assert m, warning
    print(f"failed init: {warning}; start_run took {result['start_s']:.1f} s in all")
    # W&B gives up a little after its init_timeout (it finishes the request in flight), far below
    # its own 90 s default: the variable was respected.
    assert float(m.group(1)) < 60


# ---------------------------------------------------------------------------------------------
# A sweep through a W&B outage
# ---------------------------------------------------------------------------------------------

# The smoke preset cut to one budget and two sizes (as tests/test_job_submit.py runs it).
SMALL_SMOKE = ["sweep=smoke", "sweep.budgets=[5e10]", "sweep.sizes=[3.5e4,9e4]", "fit.n_bootstrap=20",
               "data.max_bytes=2000000", "trainer.eval_tokens=16384", "trainer.eval_every=40", "trainer.log_every=40"]


@pytest.mark.ray
def test_a_sweep_with_a_key_and_no_wandb_server_trains_every_cell_offline(tmp_path):
    from llm_ray.io.tracking import PROBE_TIMEOUT_S

    env = {k: v for k, v in os.environ.items() if k not in WANDB_VARS and k != "RAY_ADDRESS"}
    env.update(FAKE_SECRETS, PYTHONPATH=ROOT, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "llm_ray.sweep", *SMALL_SMOKE, "wandb.mode=online",
                           f"trainer.storage_path={tmp_path}/runs", f"hydra.run.dir={tmp_path}/hydra"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    (tmp_path / "sweep.log").write_text(out)
    assert proc.returncode == 0, out[-6000:]
    print(f"sweep through the outage: {time.time() - t0:.0f} s")
    sweep_dir = tmp_path / "runs" / "smoke"
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert df["cell_id"].nunique() == 2 and set(df["status"]) == {"ok"}
    assert (sweep_dir / "report.md").exists()

    # One line per W&B run (each trial, and the sweep's fit run), each naming where its files are.
    warnings = [m for m in map(WARNING.search, out.splitlines()) if m]
    runs = glob.glob(str(tmp_path / "runs" / "wandb" / "wandb" / "offline-run-*"))
    assert len(runs) == 3 and {m.group(5) for m in warnings} == set(runs)
    assert len([ln for ln in out.splitlines() if "W&B" in ln and "llm_ray:" in ln]) == 3
    assert max(float(m.group(3)) for m in warnings) <= PROBE_TIMEOUT_S + 3
    assert "CommError" not in out and not [ln for ln in out.splitlines() if ln.startswith("Traceback")]
    # A local cluster started by llm-ray chose Ray's token authentication without a warning.
    assert "Token authentication is enabled" not in out
    assert grep_tree(str(tmp_path), FAKE_SECRETS.values()) == []
