"""Preparation as Ray Data tasks: the same entry as the driver's own, the same clear errors, and on
a cluster of two nodes (two `ray start` processes on loopback) with the corpus and the shards on S3
(moto's server), read back by the training workers of each node.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import secrets
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BUCKET, end_head, free_ports, processes_using, s3fs_fresh

pytestmark = pytest.mark.ray
VENV_BIN = os.path.dirname(sys.executable)
RAY = os.path.join(VENV_BIN, "ray")


def stdlib_texts(n: int, skip: int = 0) -> list[str]:
    """Real text: n standard-library sources (the same on every machine with this Python)."""
    from llm_ray.data import stdlib_text_files

    files = [f for f in stdlib_text_files() if os.path.getsize(f) > 2000][skip:skip + n]
    return [open(f, encoding="utf-8").read() for f in files]


def write_corpus(write, n_files: int = 8, docs_per_file: int = 12) -> None:
    """`n_files` Parquet and JSON Lines (.zst) files of stdlib text; write(name, bytes)."""
    for i in range(n_files):
        texts = stdlib_texts(docs_per_file, skip=i * docs_per_file)
        if i % 2:
            sink = pa.BufferOutputStream()
            pq.write_table(pa.table({"text": texts}), sink)
            write(f"part-{i:02d}.parquet", sink.getvalue().to_pybytes())
        else:
            lines = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
            write(f"part-{i:02d}.jsonl.zst", pa.Codec("zstd").compress(lines, asbytes=True))


def entry_bytes(data) -> dict:
    from llm_ray.data import load_split

    return {s: np.asarray(load_split(data, s)).tobytes() for s in ("train", "val")}


@pytest.mark.parametrize("dedup_lines", [False, True])
def test_ray_data_tasks_write_the_entry_the_driver_would(ray_cluster, tmp_path, dedup_lines):
    from llm_ray.core.config import DataConfig
    from llm_ray.data import prepare_data

    write_corpus(lambda name, blob: (tmp_path / name).write_bytes(blob))
    cfg = DataConfig(sources=[str(tmp_path / "part-*")], vocab_size=400, task_bytes=60_000,
                     shard_tokens=20_000, dedup_lines=dedup_lines)
    ray_logs, local_logs = [], []
    on_ray = prepare_data(DataConfig(**{**cfg.__dict__, "ray_min_bytes": 0}), str(tmp_path / "ray"),
                          log=ray_logs.append)
    local = prepare_data(cfg, str(tmp_path / "local"), log=local_logs.append)
    assert on_ray.key == local.key
    assert any("in Ray Data tasks across the cluster" in m for m in ray_logs), ray_logs
    assert any("in this process" in m for m in local_logs), local_logs
    m = json.loads(open(on_ray.manifest_path).read())
    assert m["build"]["executor"] == "ray_data" and len(m["pieces"]) > 3
    assert entry_bytes(on_ray) == entry_bytes(local)
    assert open(on_ray.tokenizer_path).read() == open(local.tokenizer_path).read()
    assert m["splits"] == json.loads(open(local.manifest_path).read())["splits"]
    assert on_ray.val_lines_in_train == local.val_lines_in_train
    assert any("dedup_lines:" in x for x in ray_logs) == dedup_lines


def test_a_bad_file_read_by_a_ray_data_task_is_the_same_clear_error(ray_cluster, tmp_path):
    from llm_ray.core.config import DataConfig
    from llm_ray.data import prepare_data

    write_corpus(lambda name, blob: (tmp_path / name).write_bytes(blob), n_files=4)
    blob = gzip.compress(b'{"text": "fine"}\n' * 5000)
    (tmp_path / "part-09.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    t0 = time.time()
    with pytest.raises(ValueError) as err:
        prepare_data(DataConfig(sources=[str(tmp_path / "part-*")], vocab_size=400, task_bytes=60_000,
                                ray_min_bytes=0), str(tmp_path / "cache"), log=lambda *a: None)
    message = str(err.value)
    assert message.startswith("data.sources: ") and "part-09.jsonl.gz is corrupt" in message
    assert "Traceback" not in message and len(message) < 600  # the cause, not Ray's wrapping
    assert not list((tmp_path / "cache").rglob("manifest.json"))
    print(f"failed in {time.time() - t0:.1f} s")


# --------------------------------------------------------------------------------------------
# Two nodes
# --------------------------------------------------------------------------------------------

def start_node(temp_dir: str, env: dict, head_address: str, head: bool) -> subprocess.Popen:
    """`ray start --block` for the head (at head_address) or a node joining it, 1 CPU, free ports."""
    agent, agent_grpc, runtime_env_agent, metrics, node_manager, object_manager = free_ports(6)
    args = [RAY, "start", "--block", "--num-cpus=1", f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
            "--disable-usage-stats"]
    if head:
        args += ["--head", f"--port={head_address.rsplit(':', 1)[1]}", "--include-dashboard=false",
                 f"--ray-client-server-port={free_ports(1)[0]}", '--resources={"head_node": 1}']
    else:
        args += [f"--address={head_address}", '--resources={"second_node": 1}']
    log = open(os.path.join(temp_dir, "node.log"), "wb")
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def two_nodes(env: dict, tmp_path):
    """A head and a second node (each 1 CPU, its own temp dir and token cache); ended on exit.
    Every process of the cluster has its address (RAY_ADDRESS): with other Rays on the machine, Ray
    Train's state-API calls inside it would otherwise find several clusters and give up."""
    from ray._private.services import get_node_ip_address

    dirs = [tempfile.mkdtemp(prefix=f"llmray-n{i}-", dir="/tmp") for i in range(2)]  # short: unix sockets
    address = f"{get_node_ip_address()}:{free_ports(1)[0]}"
    env = {**env, "RAY_ADDRESS": address}
    procs = []
    try:
        for i, name in enumerate(("head", "second")):
            procs.append(start_node(dirs[i], {**env, "LLM_RAY_TOKEN_CACHE": str(tmp_path / f"tokens-{name}")},
                                    address, head=i == 0))
            wait_for_nodes(address, i + 1, env, dirs[i])
        yield address
    finally:
        for proc, d in reversed(list(zip(procs, dirs))):
            end_head(proc, d)
        assert not any(processes_using(d) for d in dirs)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def wait_for_nodes(address: str, n: int, env: dict, temp_dir: str) -> None:
    code = ("import ray, time, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "t = time.time()\nwhile len([x for x in ray.nodes() if x['Alive']]) < int(sys.argv[2]):\n"
            "    assert time.time() - t < 120, ray.nodes(); time.sleep(0.5)")
    proc = subprocess.run([sys.executable, "-c", code, address, str(n)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + open(
        os.path.join(temp_dir, "node.log")).read()[-3000:]


def test_two_nodes_encode_a_corpus_on_s3_and_their_workers_train_from_its_shards(s3, tmp_path):
    """The corpus (Parquet and JSON Lines .zst) and the token cache on S3; `python -m llm_ray.train`
    joins a cluster of two nodes; Ray Data's encoding tasks run on both; one Ray Train worker per
    node reads the shards from S3 through its node's own local copy."""
    fs = s3fs_fresh()
    write_corpus(lambda name, blob: fs.pipe(f"{BUCKET}/corpus/{name}", blob))
    store = f"s3://{BUCKET}/two-nodes"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Token auth as cluster/ starts every node (KubeRay's authOptions sets these two on each pod).
    env.update(s3, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0", WANDB_MODE="disabled",
               PYTHONUNBUFFERED="1", PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    t0 = time.time()
    with two_nodes(env, tmp_path) as address:
        started = time.time()
        with open(tmp_path / "train.log", "w") as out:
            try:
                rc = subprocess.run(
                    [sys.executable, "-m", "llm_ray.train", f"data.sources=[s3://{BUCKET}/corpus/*]",
                     "data.vocab_size=512", "data.ray_min_bytes=0", "data.task_bytes=60000", "model=tiny",
                     "deepspeed=zero0", "trainer.num_workers=2", "trainer.global_batch_tokens=2048",
                     "trainer.micro_batch_size=16", "trainer.tokens=20480", "trainer.warmup_steps=2",
                     "trainer.eval_tokens=2048", "trainer.eval_every=5", "trainer.checkpoint_every=0",
                     "resources.address=auto", f"trainer.storage_path={store}", "wandb.mode=disabled",
                     f"hydra.run.dir={tmp_path}/hydra"],
                    env={**env, "RAY_ADDRESS": address}, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                    timeout=600).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        log = (tmp_path / "train.log").read_text()
        assert rc == 0, f"{rc}: {log[-8000:]}"
        print(f"cluster up in {started - t0:.0f} s; prepare + train in {time.time() - started:.0f} s")
    caches = {n: os.listdir(tmp_path / f"tokens-{n}") if (tmp_path / f"tokens-{n}").exists() else []
              for n in ("head", "second")}

    result = json.loads(fs.cat_file(f"{BUCKET}/two-nodes/train/result.json"))
    assert result["status"] == "ok" and result["world_size"] == 2
    data = result["data"]
    assert data["manifest_path"].startswith(f"{store}/data-cache/")
    manifest = json.loads(fs.cat_file(data["manifest_path"]))
    assert manifest["build"]["executor"] == "ray_data"
    nodes = {p["node"] for p in manifest["pieces"]}
    assert len(manifest["pieces"]) >= 4 and len(nodes) == 2, manifest["pieces"]  # both nodes encoded
    assert "in Ray Data tasks across the cluster" in log
    # Each node's worker fetched every shard once into its own node-local cache.
    n_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    assert len(caches["head"]) == len(caches["second"]) == n_shards, caches
