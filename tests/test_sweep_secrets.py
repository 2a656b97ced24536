"""No credential in anything a sweep writes: a smoke sweep whose corpus is read over HTTP through
URLs holding a user and password (`http://user:pw@host/...`, served on loopback), with fake AWS and
W&B keys in the environment; then every file under its storage (records, plan, results, report,
Tune's and Ray Train's state, the token cache, W&B's offline run) is searched for each of them."""

from __future__ import annotations

import functools
import glob
import http.server
import os
import sysconfig
import threading

import pytest

from conftest import FAKE_SECRETS, grep_tree

pytestmark = pytest.mark.ray
PASSWORD = "fake-corpus-pw-7c1d9e2f"
SWEEP = ["sweep=smoke", "sweep.budgets=[5e10]", "sweep.sizes=[3.5e4,9e4]", "fit.n_bootstrap=20",
         "trainer.eval_tokens=16384", "trainer.eval_every=40", "trainer.log_every=40", "wandb.mode=offline"]


@pytest.fixture
def corpus_server(tmp_path):
    """~2 MB of the standard library's sources as 8 text files over HTTP on loopback (it ignores
    the credentials; the client sends them as Basic auth, as it would to a real server)."""
    root = tmp_path / "www"
    root.mkdir()
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    chunk = (len(files) + 7) // 8
    for i in range(8):
        text = "".join(open(p, errors="replace").read() for p in files[i * chunk:(i + 1) * chunk])
        (root / f"part{i}.txt").write_text(text[:260_000])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
        directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://llmray:{PASSWORD}@127.0.0.1:{server.server_port}/part{i}.txt" for i in range(8)]
    server.shutdown()


def test_a_sweep_with_credentials_in_its_source_urls_writes_none_of_them(ray_cluster, corpus_server, tmp_path):
    from llm_ray.cli import compose_sweep
    from llm_ray.sweep import run_sweep

    storage_root = tmp_path / "runs"
    sources = "[" + ",".join(f"'{u}'" for u in corpus_server) + "]"
    out = run_sweep(*compose_sweep(*SWEEP, f"data.sources={sources}", f"trainer.storage_path={storage_root}",
                                   f"data.cache_dir={storage_root}/data-cache", f"wandb.dir={storage_root}/wandb"))
    assert len(out["plan"].cells) == 2 and not out["fit"].error
    written = [os.path.join(d, f) for d, _, fs in os.walk(storage_root) for f in fs]
    assert len(written) > 30 and any("/wandb/" in p for p in written)  # W&B's offline run is there too
    needles = [PASSWORD, "llmray:", *FAKE_SECRETS.values()]
    assert grep_tree(str(storage_root), needles) == []
    # ... and the URLs themselves are kept, masked, where the records name the corpus.
    import json

    cell = next(iter(out["plan"].cells))
    record = json.loads((storage_root / "smoke" / "cells" / cell / "result.json").read_text())
    assert record["status"] == "ok"
    assert record["job"]["data"]["sources"][0].startswith("http://***@127.0.0.1:")
