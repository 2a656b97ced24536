"""Driver side of one training run: Ray (local or joined), data prepared once, a TorchTrainer per run.

Used by `llm_ray.train` (one run) and by `llm_ray.sweeps` (one run per Tune trial).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from llm_ray.core.config import TrainJobConfig, validate_train_job
from llm_ray.core.records import RunRecord
from llm_ray.data import PreparedData
from llm_ray.io import storage, tracking
from llm_ray.io.sweepdir import read_record  # noqa: F401 - the name callers import from here
from llm_ray.training.points import POINT_DONE, branch_point_url  # noqa: F401 - the names callers import

# Ray Train V2's controller polls its workers every 2 s by default, and every ray.train.report
# waits for a poll; at 0.2 s a report costs ~0.2 s (STACK-NOTES: 20 reports 38 s -> 4 s).
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # Ray Train's print patch sends every worker print through a logger as well: lines come twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # The first worker log line a driver prints makes ray.experimental.tqdm_ray replace
    # builtins.print; Tune then cannot pickle the sweep's progress callback (log=print). Seen under
    # `ray job submit`, where the cluster's log lines reach the driver before the Tuner starts.
    "RAY_TQDM_PATCH_PRINT": "0",
    "DS_ACCELERATOR": "cpu",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}


@dataclass(frozen=True)
class RunSpec:
    """Everything a run's workers need, handed to them as the train loop's config: the typed job,
    the prepared data's paths, where to write, and the sweep cell it trains (empty for one run)."""

    job: TrainJobConfig
    data: PreparedData
    run_dir: str
    cell: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    in_process: bool = False
    """Train in the calling process (Ray Train's local mode); see `build_trainer`."""
    start_from: Optional[str] = None
    """A branch point (`branch_point_url`) to start from, as if the run had trained to there itself:
    weights, optimizer, LR-schedule step, RNG, step and history (a wsd_branches branch, or a trunk
    continuing from its last point). Its own schedule sets the lr from there on."""
    trunk_dir: Optional[str] = None
    """The wsd_branches trunk this run carries: after each step in `save_at` it saves a branch
    point into `branch_point_url(trunk_dir, step)`."""
    save_at: tuple = ()


def default_storage_path() -> str:
    return os.path.abspath("runs")


def resolve_paths(job: TrainJobConfig) -> TrainJobConfig:
    """Fill the defaults that depend on where the job was launched (made absolute here, once)."""
    t = job.trainer
    store = storage.to_local_or_url(t.storage_path or default_storage_path())
    # Token shards are cached next to the results on remote storage (every node reads the same
    # shards) and in a per-user cache locally (shared by all local runs).
    default_cache = (storage.join(store, "data-cache") if "://" in store
                     else os.path.expanduser("~/.cache/llm_ray/data"))
    data = dataclasses.replace(job.data, cache_dir=storage.to_local_or_url(
        job.data.cache_dir or default_cache))
    # W&B's own variables (WANDB_MODE, WANDB_DIR, ...) under the overrides, decided here on the
    # driver. Its local files go beside local results, else in each node's temp dir (None here, so
    # no node-local path travels into the configs and results kept on remote storage).
    wandb = tracking.resolve(job.wandb, default_dir=storage.join(store, "wandb") if "://" not in store else None)
    return dataclasses.replace(job, trainer=dataclasses.replace(t, storage_path=store),
                               data=data, wandb=wandb)


def init_ray(job: TrainJobConfig) -> None:
    """Join the cluster Ray's convention names (`resources.address`, else RAY_ADDRESS: a driver
    run by `ray job submit` joins its cluster), or start a local cluster sized for a driver + workers."""
    import ray

    if ray.is_initialized():
        return
    for k, v in RAY_ENV.items():
        if k == "DS_ACCELERATOR" and job.resources.use_gpu:
            continue
        os.environ.setdefault(k, v)
    joining = job.resources.cluster_address() is not None
    if not joining:
        # A local cluster is never preempted: skip Ray Train's preemption-watcher actor per run.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    env_vars = {k: os.environ[k] for k in (*RAY_ENV, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
                if k in os.environ}
    if joining:
        # address None: Ray reads RAY_ADDRESS itself (and joins with no num_cpus, as it must).
        ray.init(address=job.resources.address, runtime_env={"env_vars": env_vars}, log_to_driver=True)
    else:
        start_local_cluster(job, env_vars)


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Ray's private module that warns about token authentication at each local start (checked against
Ray 2.60.0; tests/test_ray_internals.py fails loudly if it moves)."""


def start_local_cluster(job: TrainJobConfig, env_vars: dict) -> None:
    """A new local cluster (`address="local"`: never some other cluster found on the machine).

    Ray 2.60 turns token authentication on for a new local cluster (its token in ~/.ray/auth_token,
    made if missing) and warns that it did at every start: llm-ray keeps Ray's choice and makes it
    quietly (RAY_AUTH_MODE, when set, decides as Ray documents)."""
    import logging

    import ray

    auth_log = logging.getLogger(RAY_AUTH_LOGGER)
    level = auth_log.level
    auth_log.setLevel(logging.ERROR)
    try:
        ray.init(address="local", num_cpus=job.resources.local_num_cpus or (os.cpu_count() or 1) + 1,
                 include_dashboard=False, log_to_driver=True, runtime_env={
                     "env_vars": env_vars, "worker_process_setup_hook": "llm_ray.training.worker_setup.quiet_local_workers"})
    finally:
        auth_log.setLevel(level)


def with_data_vocab(job: TrainJobConfig, data) -> TrainJobConfig:
    """The job with the vocabulary of the data it trains on: with data.tokenizer (a tokenizer.json of
    one's own) the file, not data.vocab_size, sets the size of the embedding and the LM head."""
    if not job.data.tokenizer or job.model.vocab_size == data.vocab_size:
        return job
    return dataclasses.replace(job, model=dataclasses.replace(job.model, vocab_size=data.vocab_size),
                               data=dataclasses.replace(job.data, vocab_size=data.vocab_size))


def prepare(job: TrainJobConfig, log=print):
    """Tokenize the corpus (once; cached by content; a large one by Ray Data tasks on the cluster
    this job's Ray joins or starts) and check the run fits it."""
    from llm_ray.data import check_fits, prepare_data

    from llm_ray.training.model import check_ledger

    check_ledger(job.model)  # before any tokenizing: a model the ledger does not count is the user's to fix
    data = prepare_data(job.data, job.data.cache_dir, log=log, start_ray=lambda: init_ray(job))
    check_fits(data, job.model.seq_len, job.trainer.eval_tokens, log=log)
    return data


def build_trainer(spec: RunSpec, callbacks: Optional[list] = None):
    """A TorchTrainer for one run; checkpoints under `<storage_path>/<trainer.name>`.

    `spec.in_process`: Ray Train's local mode (ScalingConfig(num_workers=0)): the train function
    runs in the calling process, with no controller, placement group or worker actors. A sweep uses
    it for its 1-worker CPU cells, where that start-up (~14 s of Ray processes and imports per trial
    on an idle 2-core machine) would cost more than a small cell trains. Local mode keeps no
    checkpoints and retries nothing: an interrupted cell trains again from its start. Its one-rank
    process group is made (and at the end destroyed) by Ray from the variables torchrun would set,
    which are set here in the calling process."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from llm_ray.training.loop import train_loop_per_worker

    if spec.in_process:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    t, r = spec.job.trainer, spec.job.resources
    resources = {"CPU": r.cpus_per_worker} | ({"GPU": 1} if r.use_gpu else {})
    storage_path, storage_filesystem = storage.ray_storage(t.storage_path)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        torch_config=TorchConfig(backend="nccl" if r.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=0 if spec.in_process else t.num_workers, use_gpu=r.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=t.name, storage_path=storage_path, storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=t.num_to_keep),
            failure_config=FailureConfig(max_failures=t.max_failures),
            callbacks=callbacks or []),
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:  # several in-process cells share the machine
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_training(job: TrainJobConfig, log=print) -> RunRecord:
    """Validate, prepare data, train on Ray; return the run's record (its result.json)."""
    validate_train_job(job)
    job = resolve_paths(job)
    data = prepare(job, log=log)
    job = with_data_vocab(job, data)
    init_ray(job)
    run_dir = storage.join(job.trainer.storage_path, job.trainer.name)
    build_trainer(RunSpec(job=job, data=data, run_dir=run_dir)).fit()
    return read_record(run_dir)

