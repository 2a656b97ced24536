"""What a user, a bucket or a bad input can and cannot make llm-ray do: no code run from files on
storage, no path outside the storage root, no half-parsed record taken as finished, no two drivers
on one sweep, no secret written out. Fast: no Ray, no network."""

from __future__ import annotations

import ast
import io
import os

import numpy as np
import pytest

from conftest import CONF

ROOT = os.path.dirname(CONF)
PACKAGE = os.path.join(ROOT, "llm_ray")


def torch_load_calls(path: str) -> list[tuple[int, str]]:
    """(line, source) of every `torch.load(...)` call in a file that does not pass weights_only=True."""
    with open(path) as f:
        text = f.read()
    bad = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
            kw = {k.arg: k.value for k in node.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                bad.append((node.lineno, ast.get_source_segment(text, node)))
    return bad


def test_no_torch_load_in_the_package_unpickles():
    """Every `torch.load` in llm_ray passes weights_only=True: a file on storage holds tensors, never
    code. (DeepSpeed's own resume unpickles: llm_ray.training.engine.load says why that is trusted.)"""
    calls = {os.path.relpath(os.path.join(d, f), ROOT): torch_load_calls(os.path.join(d, f))
             for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py")}
    assert {k: v for k, v in calls.items() if v} == {}
    assert len(calls) > 50  # the whole package was scanned


def test_the_scan_flags_a_torch_load_without_weights_only(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nx = torch.load('f.pt')\ny = torch.load('g.pt', weights_only=False)\n"
                   "z = torch.load('h.pt', weights_only=True)\n")
    assert [line for line, _ in torch_load_calls(str(bad))] == [2, 3]


def test_the_rng_file_of_a_checkpoint_holds_tensors_only_and_restores_numpys_stream():
    """rng_rank<k>.pt loads with weights_only=True and puts NumPy's generator back exactly."""
    import torch

    from llm_ray.training.loop import numpy_rng_as_tensors, numpy_rng_from_tensors

    np.random.seed(7)
    np.random.normal()  # a cached Gaussian in the state, too
    buf = io.BytesIO()
    torch.save({"torch": torch.get_rng_state(), **numpy_rng_as_tensors()}, buf)
    expected = np.random.rand(4), np.random.normal()
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in saved.values())
    np.random.set_state(numpy_rng_from_tensors(saved))
    assert np.array_equal(np.random.rand(4), expected[0]) and np.random.normal() == expected[1]


# ---- bad input: one clear line naming the field or file and the fix, nothing written ------------

@pytest.mark.parametrize("bad", ["../../x", "/abs", "a/b", "", ".", "..", ".hidden", "a b", "x" * 129, "a\\b"])
@pytest.mark.parametrize("field", ["sweep.name", "trainer.name"])
def test_a_name_that_would_leave_the_storage_root_is_refused(field, bad):
    from llm_ray.core.config import TrainerConfig
    from llm_ray.core.plan import SweepConfig

    make = SweepConfig if field == "sweep.name" else TrainerConfig
    with pytest.raises(ValueError, match=rf"^{field}=.*becomes a directory under the storage root.*e\.g\. {field}=my-run"):
        make(name=bad)


@pytest.mark.parametrize("good", ["isoflop", "isoflop-gpu", "C2e11-N87.4k-3f9a1c2b7e", "run_1", "a+b=c"])
def test_names_made_of_safe_characters_are_kept(good):
    from llm_ray.core.config import TrainerConfig
    from llm_ray.core.plan import SweepConfig

    assert SweepConfig(name=good).name == TrainerConfig(name=good).name == good


@pytest.mark.parametrize("field,value,dup", [
    ("budgets", [1e12, 3e12, 1e12], "1000000000000.0"),
    ("budgets", ["1e12", 1e12], "'1e12'"),
    ("shapes", [{"n_layer": 2, "d_model": 64, "n_head": 8}, {"n_layer": 2, "d_model": 64, "n_head": 8, "d_ff": 256}],
     "{'n_layer': 2, 'd_model': 64, 'n_head': 8}"),
])
def test_duplicate_budgets_or_shapes_are_refused_naming_the_field_and_the_duplicate(field, value, dup):
    from llm_ray.core.plan import SweepConfig

    with pytest.raises(ValueError) as err:
        SweepConfig(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"sweep.{field} lists {dup} twice") and "remove the duplicate" in msg, msg


def finished_record(**over) -> dict:
    from llm_ray.core.records import RunRecord

    rec = RunRecord(run_id="C1e12-N10k-abc", status="ok", params=10_000, tokens=1e6, steps=10, flops_exact=6e10,
                    model={"d_model": 8}, history=({"step": 10, "val_loss": 3.0},))
    return {**rec.to_json(), **over}


@pytest.mark.parametrize("text,says", [
    ("{\"run_id\": \"x\", \"status\": \"o", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "a run record is a JSON object"),
    ('{"run_id": "x", "status": "ok"}', "status 'ok' without params, tokens, steps, flops_exact, model, history"),
    ('{"status": "ok"}', "needs a run_id and a status"),
    ('{"run_id": "x", "status": "done"}', "needs a run_id and a status"),
])
def test_a_result_json_that_does_not_parse_or_lacks_fields_is_named_with_its_path_and_the_fix(tmp_path, text, says):
    """Never treated as finished: the resume stops with the file's path and what to do."""
    from llm_ray.sweeps.runner import is_finished

    run_dir = tmp_path / "cells" / "C1e12-N10k-abc"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(text)
    with pytest.raises(ValueError) as err:
        is_finished(str(run_dir))
    msg = str(err.value)
    assert msg.startswith(f"{run_dir}/result.json: ") and says in msg, msg
    assert msg.endswith("move the file away (or delete the cell's directory) and re-run the command, "
                        "which retrains that cell.")
    assert (run_dir / "result.json").read_text() == text  # nothing overwritten


def test_a_complete_record_is_finished_and_a_failed_one_is_not(tmp_path):
    import json

    from llm_ray.sweeps.runner import is_finished

    for name, rec in [("ok", finished_record()), ("failed", {"run_id": "f", "status": "failed", "reason": "boom"}),
                      ("diverged", {"run_id": "d", "status": "diverged", "reason": "loss rose"})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    assert [is_finished(str(tmp_path / n)) for n in ("ok", "failed", "diverged")] == [True, False, True]


def test_a_second_driver_on_one_sweep_directory_exits_naming_the_first(tmp_path):
    """The first holds `driver.lease` and refreshes its heartbeat; a second is refused with the owner
    named; once the first ends, the lease is gone and the next driver gets it."""
    import json
    import socket

    from llm_ray.io.lease import LEASE, DriverLease, LeaseHeld

    sweep_dir = str(tmp_path / "isoflop")
    with DriverLease(sweep_dir, heartbeat_s=0.1) as first:
        lease = tmp_path / "isoflop" / LEASE
        before = json.loads(lease.read_text())
        assert before["owner"] == first.owner and before["pid"] == os.getpid()
        with pytest.raises(LeaseHeld, match=rf"^{lease}: another driver \({socket.gethostname()} pid {os.getpid()}\) "
                                            r"is running this sweep .*wait for it to finish"):
            DriverLease(sweep_dir).acquire()
        import time

        time.sleep(0.5)
        assert json.loads(lease.read_text())["heartbeat"] > before["heartbeat"]  # alive
    assert not lease.exists()
    with DriverLease(sweep_dir):
        pass


def test_a_lease_whose_driver_died_is_taken_over(tmp_path):
    import json
    import time

    from llm_ray.io.lease import LEASE, DriverLease

    (tmp_path / LEASE).write_text(json.dumps({"owner": "gone:1:x", "host": "gone", "pid": 1, "started": 0,
                                              "heartbeat": time.time() - 600}))
    with DriverLease(str(tmp_path), stale_s=120) as lease:
        assert json.loads((tmp_path / LEASE).read_text())["owner"] == lease.owner


def test_the_sweep_command_refuses_a_second_driver_before_writing_anything(tmp_path, capsys):
    """`python -m llm_ray.sweep` on a directory another driver holds: exit 2, one line, plan.json untouched."""
    import subprocess
    import sys

    from llm_ray.io.lease import DriverLease

    sweep_dir = tmp_path / "smoke"
    sweep_dir.mkdir()
    (sweep_dir / "plan.json").write_text("{\"theirs\": true}")
    with DriverLease(str(sweep_dir)):
        proc = subprocess.run([sys.executable, "-m", "llm_ray.sweep", "sweep=smoke", f"trainer.storage_path={tmp_path}",
                               "wandb.mode=disabled", f"hydra.run.dir={tmp_path}/hydra"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "another driver" in proc.stderr and "is running this sweep" in proc.stderr
    assert (sweep_dir / "plan.json").read_text() == "{\"theirs\": true}"


# ---- secrets: by key and by value ----------------------------------------------------------------

def test_scrub_keeps_fields_that_merely_contain_token_and_drops_credentials_by_key_and_value():
    from llm_ray.core.secrets import scrub

    config = {"trainer": {"tokens": 2e6, "eval_tokens": 16384, "global_batch_tokens": 2048},
              "data": {"tokenizer_path": "/c/tok.json", "sources": ["https://alice:pa55w0rd-xyz@example.org/c.txt",
                                                                    "s3://bucket/corpus/*.txt"]},
              "api_key": "k", "hf_token": "hf_" + "a" * 34, "AWS_SECRET_ACCESS_KEY": "s",
              "note": "key AKIAABCDEFGHIJKLMNOP and env value very-secret-value-42 inside"}
    out = scrub(config, secrets=("very-secret-value-42",))
    assert out["trainer"] == config["trainer"]
    assert out["data"] == {"tokenizer_path": "/c/tok.json",
                           "sources": ["https://***@example.org/c.txt", "s3://bucket/corpus/*.txt"]}
    assert set(out) == {"trainer", "data", "note"}
    assert out["note"] == "key *** and env value *** inside"


def test_every_json_written_through_storage_is_redacted_by_value(tmp_path, monkeypatch):
    import json

    from conftest import FAKE_SECRETS
    from llm_ray.io import storage

    monkeypatch.setenv("WANDB_API_KEY", FAKE_SECRETS["WANDB_API_KEY"])
    storage.write_json(str(tmp_path / "r.json"), {"job": {"data": {"sources": [
        "https://bob:hunter2hunter2@host/x.txt"]}, "why": f"key={FAKE_SECRETS['WANDB_API_KEY']}", "tokens": 5}})
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "job": {"data": {"sources": ["https://***@host/x.txt"]}, "why": "key=***", "tokens": 5}}


def test_listing_is_read_again_when_a_resume_depends_on_it(s3):
    """s3fs caches a folder's listing: a branch point (or result.json) another node wrote after this
    process listed the folder must still be seen, or its cell is recorded as failed and retrained."""
    from conftest import BUCKET, s3fs_fresh
    from llm_ray.io import storage

    point = f"s3://{BUCKET}/sweep/trunks/T1/points/step-40"
    fs, key = storage.fs_and_path(point)
    fs.pipe(f"{key}/rank0/shard.pt", b"x")  # the ranks' files land first, point.json last
    assert [p.rsplit("/", 1)[1] for p in fs.ls(key)] == ["rank0"]  # this process's listing, now cached
    s3fs_fresh().pipe(f"{key}/point.json", b"{}")  # rank 0 of a worker marks the point complete
    assert not fs.exists(f"{key}/point.json")  # s3fs alone answers from its stale listing
    assert storage.exists(storage.join(point, "point.json"))


def test_an_offline_wandb_run_is_copied_to_the_runs_storage_when_it_ends(s3, tmp_path, monkeypatch):
    """On a cluster W&B writes into the node's /tmp, which an autoscaler deletes with the node: the
    offline run is copied beside the run's records on storage when it ends, ready for `wandb sync`."""
    from conftest import BUCKET, s3fs_fresh
    from llm_ray.core.config import WandbConfig
    from llm_ray.io.tracking import RunLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = f"s3://{BUCKET}/sweep/cells/C1e12-N10k-abc"
    logger = RunLogger(WandbConfig(mode="offline", dir=str(tmp_path / "node-tmp"), group="g"), enabled=True,
                       name="C1e12-N10k", key="C1e12-N10k-abc", job_type="trial", config={"tokens": 5},
                       keep_in=run_dir)
    logger.log({"step": 1, "train/loss": 3.0})
    logger.finish()
    kept = s3fs_fresh().find(f"{BUCKET}/sweep/cells/C1e12-N10k-abc/wandb")
    (name,) = {k.split("/wandb/")[1].split("/")[0] for k in kept}
    assert name.startswith("offline-run-") and any(k.endswith(".wandb") for k in kept), kept
    assert not any("wandb-metadata.json" in k for k in kept)  # no command line kept (credentials)


def test_a_lease_of_a_killed_driver_on_this_host_is_taken_over_at_once(tmp_path):
    """A sweep killed (SIGKILL: no release) and re-run at once resumes: its pid is gone on this host."""
    import json
    import socket
    import subprocess
    import sys
    import time

    from llm_ray.io.lease import LEASE, DriverLease

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LEASE).write_text(json.dumps({"owner": "x", "host": socket.gethostname(), "pid": int(gone.stdout),
                                              "started": time.time(), "heartbeat": time.time()}))
    with DriverLease(str(tmp_path)) as lease:
        assert json.loads((tmp_path / LEASE).read_text())["owner"] == lease.owner
