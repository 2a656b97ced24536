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
