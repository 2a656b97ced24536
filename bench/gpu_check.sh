#!/usr/bin/env bash
# The GPU path, measured: one script, at most 8 minutes on one H200 (each stage has its own time limit:
# data 200 s, the two gpt2_small runs 150 s each, the smoke sweep 170 s; STEPS, BATCH, MICRO resize the runs).
#
#     bash bench/gpu_check.sh                 # from the repository root, in an environment with CUDA torch
#     PYTHON=/path/to/python STEPS=200 OUT=/abs/dir bash bench/gpu_check.sh
#
# Prints, in order:
#   1. the GPU, its driver, and the torch / CUDA / DeepSpeed / Ray versions;
#   2. gpt2_small (124M parameters: GPT-2's shape, its 50,257-token vocabulary padded to 50,304 as nanoGPT
#      pads it (a multiple of 64 for the LM head's tensor-core matmul), a BPE trained on this
#      machine's Python sources, prepared first) in bf16 with ZeRO-2 under Ray Train on one GPU, STEPS
#      optimizer steps of 64k tokens: tokens/s and MFU against the datasheet bf16 peak
#      (llm_ray/training/hardware.py), over the whole run and in steady state (the second half of the
#      steps: no compilation, no warm-up);
#   3. the same with deepspeed.compile=true (torch.compile through DeepSpeed's engine.compile());
#   4. `python -m llm_ray.sweep sweep=smoke resources=gpu`: the sweep path (Tune trials of Ray Train
#      workers on the GPU), fitted and reported.
# Everything is written under $OUT (default /tmp/llm-ray-gpu-check). Each stage fails fast with the reason.
set -uo pipefail

PY=${PYTHON:-python}
OUT=${OUT:-/tmp/llm-ray-gpu-check}
STEPS=${STEPS:-150}
BATCH=${BATCH:-65536}          # tokens per optimizer step: 4 micro-batches of 16 x 1024
MICRO=${MICRO:-16}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUT"
unset DS_ACCELERATOR           # the CPU accelerator would hide the GPU from DeepSpeed
T0=$(date +%s)

fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }
stage() { echo; echo "== $* ($(( $(date +%s) - T0 )) s)"; }

stage "1. GPU, driver, versions"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    || fail "nvidia-smi lists no GPU"
"$PY" - <<'PYEOF' || fail "the Python environment is not ready for the GPU path (message above)"
import sys
try:
    import torch, deepspeed, ray
    import llm_ray.training.hardware
except ImportError as err:
    sys.exit(f"{err}: install torch's CUDA wheel (pip install torch==2.13.0), then pip install -e .")
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"DeepSpeed {deepspeed.__version__}, Ray {ray.__version__}")
if not torch.cuda.is_available():
    sys.exit("torch.cuda.is_available() is False: this torch is a CPU build, or the driver is too old "
             "for its CUDA; install torch's CUDA wheel")
name = torch.cuda.get_device_name(0)
print(f"device 0: {name}, compute capability {torch.cuda.get_device_capability(0)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'NO'}")
peak = llm_ray.training.hardware.gpu_peak_flops(name)
print(f"datasheet dense bf16 peak: {peak / 1e12:.0f} TFLOP/s" if peak else
      "no datasheet peak for this GPU in llm_ray/training/hardware.py: MFU will be NaN")
PYEOF

# GPT-2 small's run: lr 6e-4 (GPT-2 small's, as nanoGPT trains it), no mid-run checkpoint or saved
# weights (a speed check), evaluation every 100 steps on 64k held-out tokens.
GPT2=(resources=gpu deepspeed=gpu_bf16 model=gpt2_small trainer.num_workers=1
      data.vocab_size=50304 data.max_bytes=null data.exclude_tests=false
      "trainer.tokens=$((STEPS * BATCH))" "trainer.global_batch_tokens=$BATCH" "trainer.micro_batch_size=$MICRO"
      trainer.lr=6e-4 trainer.warmup_steps=20 trainer.eval_every=100 trainer.log_every=25
      trainer.checkpoint_every=0 trainer.save_weights=false wandb.mode=disabled "trainer.storage_path=$OUT/runs")

summarize() {  # tokens/s and MFU of one run, from its result.json
    "$PY" - "$1" <<'PYEOF' || fail "no usable result in $1"
import json, statistics, sys
r = json.load(open(sys.argv[1]))
if r["status"] != "ok":
    sys.exit(f"run {r['run_id']}: {r['status']}: {r['reason']}")
rows = [h for h in r["history"] if "step_time_s" in h]
batch = r["tokens"] / r["steps"]
steady = statistics.median(h["step_time_s"] for h in rows[len(rows) // 2:])
per_token = r["flops_exact"] / r["tokens"]
peak = r["peak_flops_per_worker"] * r["world_size"]
print(f"{r['run_id']}: N = {r['params'] / 1e6:.1f}M, {r['steps']} steps of {batch:.0f} tokens, "
      f"final val loss {r['final_val_loss']:.3f}, start-up {r['startup_s']:.0f} s")
print(f"  whole run:    {r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu']:.1%}")
print(f"  steady state: {batch / steady:,.0f} tokens/s, MFU {batch / steady * per_token / peak:.1%} "
      f"(median step {steady * 1e3:.1f} ms over the last {len(rows) - len(rows) // 2} steps; "
      f"{per_token / 1e9:.3f} GFLOP/token by the exact ledger; peak {peak / 1e12:.0f} TFLOP/s)")
PYEOF
}

stage "data: a BPE of 50,304 tokens on this machine's Python sources (cached for the runs)"
timeout 200 "$PY" - "${GPT2[@]}" <<'PYEOF' || fail "data preparation for gpt2_small (message above)"
import sys, time
from llm_ray.cli import compose_train
from llm_ray.training.launch import prepare, resolve_paths
t = time.time()
job = resolve_paths(compose_train(*sys.argv[1:]))
data = prepare(job, log=lambda message: None)
print(f"{data.n_train_tokens:,} train / {data.n_val_tokens:,} validation tokens, vocabulary "
      f"{job.data.vocab_size}, {time.time() - t:.0f} s")
PYEOF

stage "2. gpt2_small, bf16, ZeRO-2, Ray Train, 1 GPU, $STEPS steps"
timeout 150 "$PY" -m llm_ray.train "${GPT2[@]}" trainer.name=gpt2-bf16 "hydra.run.dir=$OUT/hydra-eager" \
    > "$OUT/gpt2-bf16.log" 2>&1 || { tail -30 "$OUT/gpt2-bf16.log"; fail "gpt2_small bf16 run (log: $OUT/gpt2-bf16.log)"; }
summarize "$OUT/runs/gpt2-bf16/result.json"

stage "3. the same with torch.compile (deepspeed.compile=true)"
timeout 150 "$PY" -m llm_ray.train "${GPT2[@]}" deepspeed.compile=true trainer.name=gpt2-bf16-compile \
    "hydra.run.dir=$OUT/hydra-compile" > "$OUT/gpt2-bf16-compile.log" 2>&1 \
    || { tail -30 "$OUT/gpt2-bf16-compile.log"; fail "gpt2_small compiled run (log: $OUT/gpt2-bf16-compile.log)"; }
summarize "$OUT/runs/gpt2-bf16-compile/result.json"

stage "4. sweep=smoke resources=gpu"
timeout 170 "$PY" -m llm_ray.sweep sweep=smoke resources=gpu wandb.mode=disabled "trainer.storage_path=$OUT/runs" \
    "hydra.run.dir=$OUT/hydra-sweep" > "$OUT/sweep-smoke.log" 2>&1 \
    || { tail -30 "$OUT/sweep-smoke.log"; fail "sweep=smoke resources=gpu (log: $OUT/sweep-smoke.log)"; }
"$PY" - "$OUT/runs/smoke" <<'PYEOF' || fail "the smoke sweep's results in $OUT/runs/smoke"
import json, os, sys
import pandas as pd
d = sys.argv[1]
final = pd.read_parquet(os.path.join(d, "results.parquet")).query("final")
print(f"{final['cell_id'].nunique()} cells, status {sorted(set(final['status']))}, "
      f"MFU per cell {', '.join(f'{m:.1%}' for m in final['mfu'])}")
a3 = json.load(open(os.path.join(d, "fit.json")))["approach3"]
print(f"approach 3: {a3.get('status')}, a = {a3.get('a')}, E = {a3.get('E')}; report: {d}/report.md")
PYEOF
stage "done"
