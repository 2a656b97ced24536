"""Storage on S3, against moto's S3 server on loopback: one URL for checkpoints, results, the token
cache and reports; a sweep killed and resumed on S3 (with a budget added on resume); no credential in
anything written.

moto[server]==5.2.5 is pinned in the dev extras: older servers answer CompleteMultipartUpload with
an XML element pyarrow (Ray's storage layer) rejects (STACK-NOTES). Credentials and the endpoint
come from the environment only, as on a real cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

from conftest import ACCESS_KEY_ID, BUCKET, FAKE_SECRETS, grep_tree, processes_using, s3fs_fresh

SECRETS = [FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"], FAKE_SECRETS["WANDB_API_KEY"], ACCESS_KEY_ID]
# The smoke preset cut to two sizes (46k and 87k parameters, 42 and 23 steps at 3e10), one cell at a
# time, so the kill lands after the first; cells on Ray Train workers (not in-process), so their
# checkpoints every 20 steps go to S3 through Ray's pyarrow filesystem. The resumed run adds a budget
# (1.5e10: one more cell, 46k; its 87k cell falls below sweep.tokens_per_param).
SWEEP = ["sweep=smoke", "sweep.sizes=[3.5e4,9e4]",
         "sweep.max_concurrent_trials=1", "sweep.train_in_process=false", "fit.n_bootstrap=20",
         "data.max_bytes=2000000", "trainer.eval_tokens=16384", "trainer.eval_every=40", "trainer.log_every=40",
         "trainer.checkpoint_every=20", "wandb.mode=offline"]


def objects(prefix: str = BUCKET) -> dict[str, dict]:
    """key -> info of every object under the prefix (listed afresh, no cache)."""
    return {k: v for k, v in s3fs_fresh().find(prefix, detail=True).items() if v["type"] == "file"}


def test_ray_storage_filesystem_writes_multipart_where_s3fs_reads(s3, tmp_path):
    """The pyarrow filesystem handed to Ray and our fsspec records reach the same server; a
    12 MB stream goes up in parts; no credential is pickled with the filesystem."""
    import pickle

    from llm_ray.io import storage

    path, fs = storage.ray_storage(f"s3://{BUCKET}/probe/")
    assert path == f"{BUCKET}/probe" and fs is not None
    assert FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"].encode() not in pickle.dumps(fs)
    blob = os.urandom(12 * 2**20)
    with fs.open_output_stream(f"{path}/big.bin") as f:
        for i in range(0, len(blob), 2**20):
            f.write(blob[i:i + 2**20])
    assert s3fs_fresh().cat_file(f"{BUCKET}/probe/big.bin") == blob
    storage.write_json(f"s3://{BUCKET}/probe/r.json", {"a": 1})
    with fs.open_input_stream(f"{path}/r.json") as f:
        assert json.loads(f.read()) == {"a": 1}
    # Without an endpoint in the environment Ray resolves s3:// itself (AWS proper).
    os.environ.pop("AWS_ENDPOINT_URL")  # monkeypatch restores it
    assert storage.ray_storage(f"s3://{BUCKET}/probe") == (f"s3://{BUCKET}/probe", None)
    assert storage.ray_storage(str(tmp_path)) == (str(tmp_path), None)


def test_token_shards_cached_on_s3_are_read_through_a_node_local_copy(s3, tmp_path):
    from llm_ray.core.config import DataConfig
    from llm_ray.data import load_split, prepare_data

    cfg = DataConfig(max_bytes=300_000, vocab_size=300)
    data = prepare_data(cfg, f"s3://{BUCKET}/runs/data-cache", log=lambda *a: None)
    assert data.manifest_path.startswith(f"s3://{BUCKET}/runs/data-cache/")
    local = tmp_path / "tokens"
    tokens = load_split(data, "train", local_cache=str(local))
    assert len(tokens) == data.n_train_tokens and len(os.listdir(local)) == len(tokens.parts)
    again = load_split(data, "train", local_cache=str(local))  # the copies, reused
    assert [p.filename for p in again.parts] == [p.filename for p in tokens.parts]
    assert prepare_data(cfg, f"s3://{BUCKET}/runs/data-cache", log=lambda *a: None) == data


def kill_tree(proc: subprocess.Popen, marker: str) -> None:
    """SIGKILL the sweep's process group, then whatever of its Ray is left (found by its temp dir)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.time() + 30
    while (left := processes_using(marker)) and time.time() < deadline:
        time.sleep(1)
    for p in left:
        try:
            p.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.mark.ray
def test_sweep_on_s3_killed_and_resumed_keeps_finished_cells_and_leaks_no_secret(s3, tmp_path):
    store = f"s3://{BUCKET}/runs"
    sweep_key = f"{BUCKET}/runs/smoke"
    work, tokens = tmp_path / "work", tmp_path / "tokens"
    work.mkdir()
    # Ray's temp root: short (unix sockets) and ours, so no other Ray on the machine is found.
    ray_tmp = tempfile.mkdtemp(prefix="llmray-s3-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(s3, PYTHONUNBUFFERED="1", RAY_TMPDIR=ray_tmp, LLM_RAY_TOKEN_CACHE=str(tokens),
               WANDB_API_KEY=FAKE_SECRETS["WANDB_API_KEY"], WANDB_MODE="offline")
    def args(budgets):
        return [sys.executable, "-m", "llm_ray.sweep", *SWEEP, f"sweep.budgets={budgets}",
                f"trainer.storage_path={store}", f"hydra.run.dir={work}/hydra"]

    try:
        # Run 1, killed (SIGKILL, the whole process group) once a cell has its result on S3.
        t0 = time.time()
        with open(work / "run1.log", "wb") as log:
            proc = subprocess.Popen(args("[3e10]"), cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            finished = []
            while not finished and proc.poll() is None and time.time() - t0 < 300:
                time.sleep(1)
                finished = sorted(k.split("/")[-2] for k in objects(f"{sweep_key}/cells")
                                  if k.endswith("/result.json"))
            kill_tree(proc, ray_tmp)
        run1 = (work / "run1.log").read_text()
        assert finished, f"no cell finished on S3 before the kill:\n{run1[-4000:]}"
        print(f"run 1 killed after {time.time() - t0:.0f} s with {len(finished)} cell(s) finished")
        before = objects(f"{sweep_key}/cells")
        kept = {c: (before[f"{sweep_key}/cells/{c}/result.json"]["ETag"],
                    s3fs_fresh().cat_file(f"{sweep_key}/cells/{c}/result.json")) for c in finished}
        assert f"{sweep_key}/results.parquet" not in objects(sweep_key)

        # Run 2: the same command with one more budget trains only what run 1 did not finish, and the new
        # budget's cell.
        t1 = time.time()
        with open(work / "run2.log", "wb") as log:
            rc = subprocess.run(args("[3e10,1.5e10]"), cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=400, start_new_session=True).returncode
        run2 = (work / "run2.log").read_text()
        assert rc == 0, run2[-6000:]
        print(f"run 2 finished in {time.time() - t1:.0f} s")
    finally:
        for p in processes_using(ray_tmp):
            p.kill()
    n = len(finished)
    assert f"sweep: {n} cells already finished (kept), {3 - n} to train" in run2
    after = objects(sweep_key)
    for c, (etag, text) in kept.items():
        key = f"{sweep_key}/cells/{c}/result.json"
        assert after[key]["ETag"] == etag and s3fs_fresh().cat_file(key) == text  # never retrained

    # Everything went through the one URL: results, fit, report, checkpoints, the token cache.
    names = set(after)
    for name in ("plan.json", "results.parquet", "results.csv", "report.md", "fit.json"):
        assert f"{sweep_key}/{name}" in names, name
    assert any("/checkpoint_" in k for k in names), "no Ray checkpoint on S3"
    assert [k for k in objects(f"{BUCKET}/runs/data-cache") if "/train/" in k and k.endswith(".bin")]
    with s3fs_fresh().open(f"{sweep_key}/results.parquet", "rb") as f:
        df = pd.read_parquet(f)
    assert df["cell_id"].nunique() == 3 and set(df["status"]) == {"ok"}
    assert any(c.startswith("C1.5e10") for c in df["cell_id"]) and not any(c.startswith("C1.5e10") for c in finished)
    assert os.listdir(tokens), "workers did not read the shards through their node-local copy"

    # Results name S3 paths only, never a node-local one; no credential in any object or log.
    local_roots = [str(tmp_path), ray_tmp, os.path.expanduser("~"), os.getcwd()]
    fs = s3fs_fresh()
    blobs = {k: fs.cat_file(k) for k in after}
    records = {k: b for k, b in blobs.items()
               if k.rsplit("/", 1)[-1] in ("result.json", "metrics.json", "plan.json", "results.csv",
                                           "fit.json", "report.md", "manifest.json")}
    assert len(records) >= 3 * 2 + 4
    for k, b in records.items():
        assert not [r for r in local_roots if r.encode() in b], (k, b[:2000])
    assert [k for k, b in blobs.items() if any(s.encode() in b for s in SECRETS)] == []
    assert grep_tree(str(tmp_path), SECRETS) == []
    assert grep_tree(os.path.join(ray_tmp), SECRETS) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)
