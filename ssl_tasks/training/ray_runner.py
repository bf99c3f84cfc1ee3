"""Runs the plain loop under Ray Train's ``TorchTrainer``: the project's only Ray import.

gloo on CPU, NCCL on GPU (Ray's defaults), a checkpoint reported every epoch, and
``FailureConfig(max_failures)`` so a dead worker restarts the group from the last checkpoint.
With ``RAY_ADDRESS`` set the same code joins an existing cluster; otherwise a local one starts.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest.mock import patch  # patch.dict: the standard library's scoped os.environ change

import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.training.config import TrainJob, job_from_dict, job_to_dict
from ssl_tasks.training.loop import CHECKPOINT_FILE, run_training
from ssl_tasks.training.store import localize_job, open_store, stage_job, store_uri

QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    # Train V2's controller polls its workers every 2 s, and a worker's ``ray.train.report`` blocks until the
    # controller has taken the previous report: at the 2 s default every epoch shorter than 2 s stretched to 2 s
    # (the default pipeline's 1 s digits epochs doubled). 0.25 s keeps the wait small without the polling itself
    # competing for a 2-core CPU (0.1 s slowed training by ~20% here). bench/RESULTS.md section 4 has the figures.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # Train V2 patches print() in workers into its logger, and the driver then shows each line twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


class RaySession:
    """The loop's Session backed by ``ray.train`` (built inside each worker)."""

    def __init__(self, tracking: dict[str, str]) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._tracking = tracking
        self._restored: tempfile.TemporaryDirectory[str] | None = None

    def latest_checkpoint(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        self._restored = tempfile.TemporaryDirectory(prefix="ssl-restore-")
        path = Path(ckpt.to_directory(self._restored.name))
        return path if (path / CHECKPOINT_FILE).is_file() else None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        import ray.train

        if self.rank == 0 and self._tracking.get("run_id"):
            from ssl_tasks.tracking.mlflow_tracking import log_epoch

            log_epoch(self._tracking["uri"], self._tracking["run_id"], metrics)
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


def train_loop_per_worker(config: dict[str, Any]) -> str | None:
    """Ray Train entry point: rebuild the typed job and run the plain loop.

    A ``UserError`` (a ``TrainingStopped`` verdict: collapse, a non-finite loss; or a bad parameter or data the
    worker found) is returned as its message rather than raised: Ray Train retries every worker error from the last
    checkpoint (``FailureConfig.max_failures``), which would only reach the same error again, with a traceback per
    attempt. Every rank stops at the same step, so the group ends together; ``fit`` raises it in the driver.
    """
    import logging

    # per-epoch "Checkpoint successfully created" / "Reporting training result" lines drown the loop's own progress
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # Train V2 logs the second one through a logger named after its source file
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    if config.get("_store"):  # a cluster with no shared filesystem: the job's files come from the store
        config = localize_job(config, config["_store"])
    job = job_from_dict(config)
    threads = int(config.get("_threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        run_training(job, RaySession(job.tracking))
    except UserError as e:
        return str(e)
    return None


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class PlainText(logging.Filter):
    """Drops ANSI colour codes from a log record (Ray colours the dashboard address it logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = ANSI_ESCAPE.sub("", str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(ANSI_ESCAPE.sub("", a) if isinstance(a, str) else a for a in record.args)
        return True


def plain_ray_logs() -> None:
    """Ray's driver output as plain text when it goes to a file or a pipe (a stage log, Prefect's log, CI): worker
    lines without the colour codes around their ``(RayTrainWorker pid=...)`` prefix (``RAY_COLOR_PREFIX=0``, unless
    the user set it) and Ray's own log records stripped of theirs. A terminal keeps Ray's colours."""
    if sys.stdout.isatty():
        return
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, PlainText) for f in handler.filters):
            handler.addFilter(PlainText())


def init_ray(address: str | None = None) -> None:
    """Connect to ``address`` / ``RAY_ADDRESS`` or start a local single-machine cluster."""
    import ray

    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    plain_ray_logs()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:  # a shared cluster: its authentication is the user's (RAY_AUTH_MODE / RAY_AUTH_TOKEN, infra/SCALING.md)
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": job_env()})
    else:
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":  # an explicit opt-out stays the user's choice
            _local_cluster_token()
        # Keep the dashboard: without it Ray Train's placement-group cleaner cannot query the controller's
        # state and logs an error every few seconds, and start-up is no faster (../shared/STACK.md).
        # "local": a new cluster even when a `ray start` cluster is discoverable on this machine (plain
        # ray.init() would join that one, then refuse num_cpus): only RAY_ADDRESS / ray.address join one.
        # Its own GCS port, and that address in the environment its processes start with: Ray Train's placement-
        # group cleaner finds the controller through the state API with no address, which resolves RAY_ADDRESS and
        # otherwise scans the machine, failing ("Found multiple active Ray instances") whenever another Ray runs
        # here, e.g. a second pipeline's. Only the cluster's processes see it: this process's environment is
        # restored, so a later init_ray in it starts or joins afresh.
        port = _free_port()
        with patch.dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{port}", RAY_GCS_SERVER_PORT=str(port)):  # then restored
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1",
                     log_to_driver=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


# Variables a worker needs to log to the user's MLflow server and its artifact store (credentials, TLS, S3 endpoint).
FORWARDED_PREFIXES = ("MLFLOW_", "AWS_")


def job_env() -> dict[str, str]:
    """The environment a job brings to a cluster it joins: ``QUIET_ENV`` (the Train controller's poll interval and
    print patch above) and this process's ``MLFLOW_*`` / ``AWS_*`` variables.

    A local cluster's processes inherit this process's environment; an existing cluster's (``RAY_ADDRESS``: a
    KubeRay head, another shell's ``ray start``) were started without it, so a worker logging to an MLflow server
    with authentication got 401 there, and the controller polled at Ray's 2 s default. Passed as the job's
    ``runtime_env``, which Ray stores with the job: anyone who can read the cluster's job table (its dashboard)
    can read these values, as with any runtime_env (infra/SCALING.md).
    """
    env = dict(QUIET_ENV)
    env.update({k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)})
    return env


def _local_cluster_token() -> None:
    """Token authentication, with a fresh random token, for the local cluster this process is about to start.

    Ray 2.60's GCS, raylet and worker gRPC servers listen on every interface, and ``_node_ip_address="127.0.0.1"``
    does not change that (checked on this machine with /proc/net/tcp6), so anyone on the network could attach to a
    training cluster started with authentication off. With ``RAY_AUTH_MODE=token`` and a token only this process
    and its children (the cluster's processes inherit the environment) know, every one of them refuses a caller
    without it (tests/faults/test_ray_exposure.py). Set in the environment, not in a file: Ray's default token lives
    in ``~/.ray/auth_token``, shared by every cluster of the user. ``RAY_AUTH_MODE=disabled`` set explicitly (the
    in-process test sessions do, which start and stop several clusters in one process) opts out, as in Ray itself.
    """
    import secrets

    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    Config.initialize("")  # this process's cached Ray config reads the mode again, as Ray's own switch does


def fit(job: TrainJob, *, storage_dir: Path, name: str, address: str | None = None,
        store: str | None = None) -> dict[str, Any]:
    """Train with ``job.train.num_workers`` Ray workers; return the final checkpoint's state.

    Ray Train's run storage is ``storage_dir`` (the project's disk), or with a shared store (``store``, from
    ``ray.storage``, else ``SSL_TASKS_STORAGE``: ``ssl_tasks/training/store.py``) ``<store>/train``, and then every
    file the job names travels through the store too: no worker needs the project's disk.

    A run the loop stopped (``TrainingStopped``: collapse under ``stop_on_collapse``, a non-finite loss), or any
    other ``UserError`` in a worker, raises here once, without Ray retries, so the CLI prints one line.

    ``name`` must identify the job's configuration: a rerun with the same name and storage
    resumes from the stored checkpoint (Ray Train's restore), a new name starts fresh.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(address)
    cfg = job.train
    cpus = cfg.cpus_per_worker or max(1, int(ray.cluster_resources().get("CPU", 1)) // cfg.num_workers)
    config = job_to_dict(job)
    config["_threads"] = cpus
    uri = store_uri(store)
    if uri:
        fs, base = open_store(uri)
        config = stage_job(config, uri)
        config["_store"] = uri
        storage_path, storage_fs = f"{base}/train", fs
    else:
        storage_path, storage_fs = str(Path(storage_dir).resolve()), None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cpus}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.return_value:  # rank 0's UserError (a verdict, a bad param); its storage stays, as after an error
        raise UserError(result.return_value)
    if result.checkpoint is None:
        raise RuntimeError(f"run {job.run!r} finished without a checkpoint")
    with tempfile.TemporaryDirectory(prefix="ssl-final-") as d:
        path = Path(result.checkpoint.to_directory(d))
        state = torch.load(path / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    if storage_fs is not None:
        storage_fs.delete_dir(f"{storage_path}/{name}")
    else:
        shutil.rmtree(Path(storage_dir) / name, ignore_errors=True)
    return state
