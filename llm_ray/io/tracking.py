"""Weights & Biases logging for one training run: world rank 0 only, never a secret, never a lost run.

W&B's own environment variables are respected the way W&B documents them, with the Hydra overrides
(`wandb.*`) on top: `resolve` fills what the config leaves unset from WANDB_MODE, WANDB_PROJECT,
WANDB_ENTITY and WANDB_DIR, once, on the driver, so every worker of a run logs the same way.

Tracking never costs a run: an online run first checks, within PROBE_TIMEOUT_S, that the W&B server
answers at all, and `wandb.init` gets a bounded time (W&B's `init_timeout`); if either fails, the run
logs offline (one line says so; `wandb sync` uploads it later) and trains on. `finish_timeout` bounds
the final upload the same way (what is left stays on disk for `wandb sync`).

`ray.air.integrations.wandb.setup_wandb(rank_zero_only=True)` was seen to create runs on every rank
under Ray Train V2, so the rank is checked here instead.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Optional

DEFAULT_PROJECT = "llm-ray"
# W&B's WANDB_MODE values (wandb.sdk.wandb_settings.Settings.mode) as llm-ray's modes: `dryrun` and
# `run` are W&B's old names for offline and online.
WANDB_ENV_MODES = {"online": "online", "offline": "offline", "disabled": "disabled", "dryrun": "offline",
                   "run": "online"}
PROBE_TIMEOUT_S = 5.0
"""How long an online run waits for any HTTP answer from the W&B server before going offline."""
INIT_TIMEOUT_S = 30.0
"""W&B's `init_timeout` for an online run (W&B's default is 90 s); WANDB_INIT_TIMEOUT overrides it."""
FINISH_TIMEOUT_S = 60.0
"""W&B's `finish_timeout`: the most a run's end waits for its upload (W&B's default: forever)."""


def scrub(obj: Any) -> Any:
    """A W&B config without secrets: entries whose key names one dropped (`api_key`, `token`, not
    `tokens` or `tokenizer_path`), and every string redacted by value (llm_ray.core.secrets)."""
    from llm_ray.core.secrets import scrub as scrub_secrets, secret_values

    return scrub_secrets(obj, secret_values(os.environ))


def resolve_mode(mode: str) -> str:
    """`auto` defers to W&B's own switch, WANDB_MODE; without it, online when WANDB_API_KEY is set
    and offline otherwise (no network attempt). Any other mode is an explicit choice and wins."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        if env.lower() not in WANDB_ENV_MODES:
            raise ValueError(f"WANDB_MODE={env!r}: llm-ray logs with online, offline or disabled; "
                             "set one of those, or unset WANDB_MODE and choose with wandb.mode=...")
        return WANDB_ENV_MODES[env.lower()]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def resolve(cfg, default_dir: Optional[str] = None):
    """`cfg` (a WandbConfig) with what it leaves unset taken from W&B's environment variables:
    mode `auto` from WANDB_MODE (`resolve_mode`), project from WANDB_PROJECT (else `llm-ray`),
    entity from WANDB_ENTITY, dir from WANDB_DIR (else `default_dir`). Called on the driver, so the
    environment the user launched from decides, whatever the workers' nodes hold."""
    env = os.environ
    return dataclasses.replace(
        cfg, mode=resolve_mode(cfg.mode), project=cfg.project or env.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        entity=cfg.entity or env.get("WANDB_ENTITY") or None, dir=cfg.dir or env.get("WANDB_DIR") or default_dir)


def local_dir(directory: Optional[str]) -> str:
    """Where W&B writes its local files: `wandb.dir`, else this node's temp dir (the default when
    results live on remote storage, so no node-local path travels into them)."""
    import tempfile

    directory = directory or os.path.join(tempfile.gettempdir(), "llm-ray-wandb")
    os.makedirs(directory, exist_ok=True)
    return directory


def start_run(cfg, *, name: str, key: str, job_type: str, config: dict):
    """The one place a W&B run starts (trial runs and a sweep's fit run): None when disabled.

    `cfg` is a `WandbConfig`; the run's id is made from (group, key), so a resumed run continues its
    W&B run and two configs never share one; the config is scrubbed of anything that looks secret.
    An online run that cannot reach W&B logs offline instead, and one line says so."""
    cfg = resolve(cfg)
    if cfg.mode == "disabled":
        return None
    import wandb

    kwargs = dict(project=cfg.project, entity=cfg.entity, group=cfg.group, name=name, id=_run_id(cfg.group, key),
                  job_type=job_type, dir=local_dir(cfg.dir), config=scrub(config), resume="allow")
    problem = None
    if cfg.mode == "online":
        run, problem = _start_online(wandb, kwargs)
        if run is not None:
            return run
    run = _start_offline(wandb, kwargs, name)
    if run is None:
        return None
    if problem:
        _say(f"W&B: {problem}; run {name} logs offline instead: upload it later with "
             f"`wandb sync {run.settings.sync_dir}`")
    return run


def _start_offline(wandb, kwargs: dict, name: str):
    """The offline run, or None (one line says so). After a failed online init W&B's service can
    still hold the run's id under load ("run ID ... is in use", seen on a busy 2-core CI machine,
    even after a teardown): the second try tears the service down and starts under a fresh id, so
    the run is still tracked (its `wandb sync` makes a W&B run of its own)."""
    try:
        return wandb.init(mode="offline", settings=_settings(wandb, online=False), **kwargs)
    except Exception as err:  # noqa: BLE001 - tracking never costs a run
        first = _brief(err)
    wandb.teardown()
    fresh = dict(kwargs, id=f"{kwargs['id']}-{os.getpid()}-{int(time.time())}")
    try:
        run = wandb.init(mode="offline", settings=_settings(wandb, online=False), **fresh)
    except Exception as err:  # noqa: BLE001
        _say(f"W&B: run {name} could not start even offline ({first}; then {_brief(err)}); it trains without W&B.")
        return None
    _say(f"W&B: run {name}'s id was still held ({first}); it logs offline as {fresh['id']}.")
    return run


def _start_online(wandb, kwargs: dict):
    """(the online run, None), or (None, why not) when the server does not answer in PROBE_TIMEOUT_S
    or `wandb.init` fails (W&B's CommError after its init_timeout, a refused key, ...)."""
    t0 = time.monotonic()
    base_url = wandb.setup().settings.base_url  # W&B's own resolution: WANDB_BASE_URL, `wandb login --host`
    silent = unanswered(base_url, PROBE_TIMEOUT_S)
    if silent:
        return None, f"{_without_credentials(base_url)} did not answer ({silent}; {time.monotonic() - t0:.1f} s)"
    try:
        return wandb.init(mode="online", settings=_settings(wandb, online=True), **kwargs), None
    except Exception as err:  # noqa: BLE001 - tracking never costs a run
        # A failed init leaves its run registered in W&B's service process, and an offline init of
        # the same id then times out too (wandb/wandb#9865); teardown ends that service.
        wandb.teardown()
        return None, f"wandb.init failed ({_brief(err)}; {time.monotonic() - t0:.1f} s)"


def _settings(wandb, *, online: bool):
    """Quiet runs; online ones with bounded start and end (unless WANDB_INIT_TIMEOUT or
    WANDB_FINISH_TIMEOUT, W&B's own variables, say otherwise)."""
    bounds = {}
    if online:
        bounds = {k: v for k, v in (("init_timeout", INIT_TIMEOUT_S), ("finish_timeout", FINISH_TIMEOUT_S))
                  if f"WANDB_{k.upper()}" not in os.environ}
    # x_disable_meta: W&B's metadata file records the command line (sys.argv), where a Hydra override
    # can hold a credential (a source URL's password); the run's config, scrubbed, says what ran.
    return wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True, silent=True, **bounds)


def unanswered(url: str, timeout: float) -> Optional[str]:
    """None when `url` gives any HTTP answer (whatever its status) within `timeout` seconds, else
    why not. The request runs in a daemon thread, abandoned a second after its own timeout, so a
    stalled DNS lookup is bounded as well."""
    import threading
    import urllib.error
    import urllib.request

    outcome: list = []

    def probe() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # the server answered
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - every way of not answering
            outcome.append(_brief(getattr(err, "reason", err)))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return outcome[0] if outcome else f"no answer in {timeout:.0f} s"


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _brief(err) -> str:
    """One line: an exception's type and the first line of its message (a plain reason as it is)."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first}" if isinstance(err, BaseException) else first


def _say(message: str) -> None:
    print(f"llm_ray: {message}", file=sys.stderr, flush=True)


class RunLogger:
    """A training run's W&B run on world rank 0; a no-op elsewhere and when mode is disabled.
    `name` is what a person reads (`C3e13-N1.2M`); `key` is the run's content-keyed id."""

    def __init__(self, cfg, *, enabled: bool, name: str, key: str, job_type: str, config: dict,
                 keep_in: Optional[str] = None):
        self.run = start_run(cfg, name=name, key=key, job_type=job_type, config=config) if enabled else None
        self.keep_in = keep_in
        if self.run is None:
            return
        self.run.define_metric("step")
        for prefix in ("train/*", "val/*", "perf/*"):
            self.run.define_metric(prefix, step_metric="step")
        # The same losses against compute and data, so a sweep's runs of different sizes overlay
        # on one C or D axis directly.
        self.run.define_metric("tokens")
        self.run.define_metric("flops")
        self.run.define_metric("vs_flops/*", step_metric="flops")
        self.run.define_metric("vs_tokens/*", step_metric="tokens")

    def log(self, row: dict) -> None:
        if self.run is not None:
            losses = {k.split("/")[0] + "_loss": v for k, v in row.items() if k in ("train/loss", "val/loss")}
            self.run.log({**row, **{f"vs_flops/{k}": v for k, v in losses.items()},
                          **{f"vs_tokens/{k}": v for k, v in losses.items()}})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        """End the W&B run; an offline run's files are then copied to remote `keep_in` (the run's
        directory on storage), so they outlive the node (an autoscaler removes it with its /tmp)."""
        if self.run is not None:
            offline_dir = self.run.settings.sync_dir if self.run.settings.mode == "offline" else None
            self.run.finish(exit_code=exit_code)
            self.run = None
            if offline_dir and self.keep_in and "://" in self.keep_in:
                keep_offline_run(offline_dir, self.keep_in)


def keep_offline_run(offline_dir: str, keep_in: str) -> Optional[str]:
    """Copy an offline W&B run (`<dir>/wandb/offline-run-*`) to `<keep_in>/wandb/<its name>`, where
    `wandb sync` can later upload it from any machine; its URL, or None if the copy failed (a line
    says so: tracking never costs a run)."""
    from llm_ray.io import storage

    url = storage.join(keep_in, "wandb", os.path.basename(offline_dir.rstrip("/")))
    try:
        storage.upload_dir(offline_dir, url)
    except OSError as err:
        _say(f"W&B: the offline run {offline_dir} stays on this node only (copy to {url} failed: {_brief(err)})")
        return None
    return url


def _run_id(group: Optional[str], name: str) -> str:
    """A stable id from the run's coordinates, so a resumed run continues the same W&B run."""
    import hashlib

    return hashlib.sha1(f"{group}/{name}".encode()).hexdigest()[:16]
