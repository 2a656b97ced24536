# Two commands for a fresh machine: `make demo` (set up + run the main job) and `make test`.
# Both are idempotent: a second call reuses .venv and the pre-built DeepSpeed ops.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llm-ray-installed

.PHONY: setup demo train test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel from local disk first, so `torch>=...` below is already satisfied (no CUDA download).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# Build DeepSpeed's CPU ops once into the torch-extensions cache (1-4 min of gcc, then seconds).
	$(PY) -m llm_ray.prebuild
	touch $(STAMP)

demo: setup
	$(PY) -m llm_ray.sweep

train: setup
	$(PY) -m llm_ray.train

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/bench_train.py
	$(PY) bench/bench_fit.py
	$(PY) bench/bench_sweep.py
	$(PY) bench/bench_data.py

clean-venv:
	rm -rf $(VENV)
