"""The package installs anywhere: `pip install .` (not editable) carries the Hydra configs, the commands
find them from any directory, `llm-ray <command>` is installed beside `python -m llm_ray.<command>`,
a user's own config directory joins through `hydra.searchpath`, and nothing in the repository points
at a file outside it."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys

from conftest import ROOT

USER_MODEL = """\
# A user's own model shape, kept outside the package.
defaults:
  - model_schema
n_layer: 3
d_model: 96
n_head: 3
seq_len: 64
vocab_size: ${data.vocab_size}
"""


def _fresh_venv(tmp_path) -> str:
    """A new venv whose only llm_ray is a non-editable install of a copy of this checkout; the
    dependencies come from this interpreter's site-packages through a .pth (no download)."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(os.path.join(ROOT, "llm_ray"), src / "llm_ray",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "deps.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", str(src)], check=True, timeout=300)
    shutil.rmtree(src)  # the install must not lean on the copy it was built from
    return str(venv)


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_non_editable_install_runs_the_commands_from_another_directory_with_a_user_config_dir(tmp_path):
    venv = _fresh_venv(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "my_conf" / "model").mkdir(parents=True)
    (elsewhere / "my_conf" / "model" / "mine.yaml").write_text(USER_MODEL)
    run = dict(cwd=elsewhere, env=_clean_env(), capture_output=True, text=True, timeout=300)
    where = subprocess.run([f"{venv}/bin/python", "-c", "import llm_ray, llm_ray.cli as c; "
                            "print(llm_ray.__file__); print(c.CONF)"], **run)
    module_file, conf = where.stdout.split()
    assert module_file.startswith(venv) and conf.startswith(venv), where.stdout
    assert os.path.isfile(os.path.join(conf, "model", "tiny.yaml"))

    shown = subprocess.run([f"{venv}/bin/python", "-m", "llm_ray.train", "--cfg", "job", "model=tiny"], **run)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^  n_layer: 2$", shown.stdout, re.M)  # conf/model/tiny.yaml, from the package

    mine = subprocess.run([f"{venv}/bin/llm-ray", "train", "--cfg", "job", "model=mine",
                           f"hydra.searchpath=[file://{elsewhere}/my_conf]"], **run)
    assert mine.returncode == 0, mine.stderr
    assert re.search(r"^  d_model: 96$", mine.stdout, re.M)  # the user's model/mine.yaml

    bad = subprocess.run([f"{venv}/bin/llm-ray", "train", "trainer.tokns=1"], **run)
    assert bad.returncode == 2 and "did you mean trainer.tokens?" in bad.stderr


def test_llm_ray_without_a_known_command_lists_the_commands():
    from llm_ray.cli import COMMANDS

    proc = subprocess.run([sys.executable, "-c", "from llm_ray.cli import main; main(['trian'])"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)
    assert proc.returncode == 2
    assert all(c in proc.stderr for c in COMMANDS)
    for name in COMMANDS:
        assert os.path.isfile(os.path.join(ROOT, "llm_ray", f"{name}.py"))


def test_a_config_directory_of_ones_own_joins_through_hydra_searchpath(tmp_path):
    from llm_ray.cli import compose_train

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(USER_MODEL)
    job = compose_train("model=mine", f"hydra.searchpath=[file://{tmp_path}]")
    assert (job.model.n_layer, job.model.d_model, job.model.n_head) == (3, 96, 3)
    assert job.model.vocab_size == job.data.vocab_size


def test_nothing_in_the_repository_refers_to_files_outside_it():
    pattern = re.compile(r"\.\./shared|/work/(main|shared|wt-)")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    hits = []
    for rel in files:
        path = os.path.join(ROOT, rel)
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        if path != os.path.abspath(__file__):
            hits += [f"{rel}: {m.group(0)}" for m in pattern.finditer(text)]
    assert hits == []
