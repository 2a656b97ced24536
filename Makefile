# Two commands for a fresh machine: `make demo` (set up + run the main job) and `make test`.
# Both are idempotent: a second call reuses .venv and the pre-built DeepSpeed ops.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llm-ray-installed
# torch comes first, from an explicit index, the same on every machine: the CPU wheels by default.
# For a CUDA machine: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo train test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch from TORCH_INDEX first, so `torch>=...` below is already satisfied (pip picks no build itself);
	# --no-deps: its own requirements come with the package's, from the ordinary index.
	$(PY) -m pip install -q --no-deps '$(TORCH)' --index-url $(TORCH_INDEX)
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

# Every benchmark docs/benchmarks.md lists. The compression and downstream ones measure a finished
# sweep with saved weights: `make demo` leaves one in runs/isoflop (BENCH_SWEEP=DIR for another).
BENCH_SWEEP ?= runs/isoflop

bench: setup
	$(PY) bench/bench_train.py
	$(PY) bench/bench_fit.py
	$(PY) bench/bench_sweep.py
	$(PY) bench/bench_step_options.py
	$(PY) bench/bench_worker_start.py
	$(PY) bench/bench_trial_reuse.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_wsd.py
	$(PY) bench/bench_compare.py
	test -f $(BENCH_SWEEP)/plan.json || { echo "no sweep in $(BENCH_SWEEP): run make demo first (or BENCH_SWEEP=DIR)"; exit 2; }
	$(PY) bench/bench_compress.py --sweep-dir $(BENCH_SWEEP)
	$(PY) bench/bench_downstream.py --sweep-dir $(BENCH_SWEEP)

clean-venv:
	rm -rf $(VENV)
