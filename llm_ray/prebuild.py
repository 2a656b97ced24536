"""Build DeepSpeed's CPU ops once, into the torch-extensions cache, so no run pays for gcc.

`make setup` runs this. DeepSpeed JIT-compiles its CPU ops on first use (shm communication for
init_distributed on CPU: ~60-80 s; DeepSpeedCPUAdam for optimizer offload: ~100-130 s). Loading them
here puts the shared objects into this environment's own cache (<venv>/torch_extensions, see
llm_ray.training.engine.use_venv_ops_cache); every later process, Ray workers included, loads them in seconds. On a CUDA machine DeepSpeed uses NCCL and
its CUDA ops instead, so there is nothing to pre-build.
"""

from __future__ import annotations

import os
import time


def main() -> None:
    import torch

    if torch.cuda.is_available():
        print("prebuild: CUDA present, DeepSpeed's CPU ops are not needed; nothing to build.")
        return
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from llm_ray.training.engine import same_ops_build, use_venv_ops_cache

    print(f"prebuild: ops cache {use_venv_ops_cache()}")
    from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder

    for builder in (ShareMemCommBuilder(), CPUAdamBuilder()):
        t0 = time.time()
        print(f"prebuild: {builder.name} ...", flush=True)
        with same_ops_build():  # the build Ray workers will look for
            builder.load(verbose=False)
        print(f"prebuild: {builder.name} ready in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
