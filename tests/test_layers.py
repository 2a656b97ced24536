"""The package's shape: layers whose imports point one way, pure layers, small functions.

Static (the source's AST, lazy imports inside functions included) and fast; the subprocess test in
test_fit_cli.py checks the same purity at run time.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "llm_ray"
# Low to high, along the data path: a module may import its own layer and the layers below.
LAYERS = ["core", "fitting", "io", "data", "training", "finetune", "compression", "sweeps", "reporting", "stages",
          "commands"]
PURE = {"core", "fitting"}
FRAMEWORKS = {"torch", "ray", "wandb", "hydra", "omegaconf", "deepspeed", "matplotlib"}


def layer_of(module: str) -> str:
    """`llm_ray.training.loop` -> training; a top-level module (`llm_ray.sweep`) is a command."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in LAYERS:  # the package itself, e.g. `from llm_ray.core import x`
        return parts[1]
    return "commands"


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def imports_of(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                      if node.module == "llm_ray"]
    return found


MODULES = modules()


def test_every_module_sits_in_a_known_layer():
    assert {layer_of(m) for m in MODULES} <= set(LAYERS)
    assert {"core", "fitting", "io", "data", "training", "sweeps", "reporting"} <= {layer_of(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    here = LAYERS.index(layer_of(module))
    upward = [m for m in imports_of(MODULES[module])
              if m.startswith("llm_ray.") and LAYERS.index(layer_of(m)) > here]
    assert not upward, f"{module} ({LAYERS[here]}) imports upward: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) in PURE))
def test_pure_layers_import_no_framework(module):
    bad = [m for m in imports_of(MODULES[module]) if m.split(".")[0] in FRAMEWORKS]
    assert not bad, f"{module} is in a pure layer but imports {bad}"


def test_pure_layers_load_no_framework_at_run_time():
    code = ("import sys, llm_ray.core.config, llm_ray.core.plan, llm_ray.core.records, llm_ray.fitting; "
            f"bad = [m for m in {sorted(FRAMEWORKS)!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def functions():
    for name, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield name, node


def test_no_function_needs_a_scroll_bar():
    long = [f"{m}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for m, f in functions()
            if f.end_lineno - f.lineno + 1 > 80]
    assert not long, long


def test_the_training_loop_reads_as_a_table_of_contents():
    (loop,) = [f for m, f in functions() if f.name == "train_loop_per_worker"]
    assert loop.end_lineno - loop.lineno + 1 <= 25


def file_imports(module: str) -> set[str]:
    """The package's files `module` imports, at the top or inside a function: `from a.b import c`
    is the file a/b/c.py when there is one, else a/b (its __init__.py)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


def import_cycles(graph: dict[str, set]) -> list[list[str]]:
    """Every strongly connected group of more than one file (Tarjan), each a cycle or several."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_cycle_finder_finds_a_cycle_through_three_files_and_none_in_a_chain():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_two_files_import_each_other_even_from_inside_a_function():
    cycles = import_cycles({m: file_imports(m) for m in MODULES})
    assert not cycles, f"import cycles between files (move the shared names into a module of their own): {cycles}"


def test_a_stage_reads_a_sweep_directory_without_importing_the_trainer():
    code = ("import sys, llm_ray.io.sweepdir; "
            "bad = [m for m in ('llm_ray.training', 'torch', 'ray', 'deepspeed') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
