"""Build DeepSpeed's CPU ops once, into the torch-extensions cache, so no run pays for gcc.

`make setup` runs this. DeepSpeed JIT-compiles its CPU ops on first use; the one every CPU run needs
(shm communication for init_distributed: ~60-80 s of gcc) is built here, into this environment's own
cache (<venv>/torch_extensions, see llm_ray.training.engine.use_venv_ops_cache), so every later
process, Ray workers included, loads it in seconds. DeepSpeedCPUAdam (optimizer offload, ~100-130 s)
is built only with `--offload`, or by the first run with deepspeed.offload_optimizer=true (then
cached the same way): most runs never offload, and set-up should not make them wait for it. On a
CUDA machine DeepSpeed uses NCCL and its CUDA ops instead, so there is nothing to pre-build.
"""

from __future__ import annotations

import os
import time


def main(argv: list[str] | None = None) -> None:
    import argparse

    import torch

    ap = argparse.ArgumentParser(prog="python -m llm_ray.prebuild")
    ap.add_argument("--offload", action="store_true", help="also build DeepSpeedCPUAdam (optimizer offload)")
    args = ap.parse_args(argv)

    if torch.cuda.is_available():
        print("prebuild: CUDA present, DeepSpeed's CPU ops are not needed; nothing to build.")
        return
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from llm_ray.training.engine import same_ops_build, use_venv_ops_cache

    print(f"prebuild: ops cache {use_venv_ops_cache()}")
    from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder

    for builder in (ShareMemCommBuilder(), *([CPUAdamBuilder()] if args.offload else [])):
        t0 = time.time()
        print(f"prebuild: {builder.name} ...", flush=True)
        with same_ops_build():  # the build Ray workers will look for
            builder.load(verbose=False)
        print(f"prebuild: {builder.name} ready in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
