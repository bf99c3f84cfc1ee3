"""Everything the pipeline says to MLflow goes through these functions (MlflowClient, no global run).

Default store: ``sqlite:///<project>/mlflow/mlflow.db`` with artifacts beside it, no server
needed; ``MLFLOW_TRACKING_URI`` points the same code at a tracking server.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# MLflow 3 opens an experiment without this tag in its GenAI view (traces, tokens, cost); ours are model training.
KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_TAGS = {KIND_TAG: "custom_model_development"}
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
#: ``<host>:<pid>`` of the process that keeps a run open: a RUNNING run whose process is gone was killed
OWNER_TAG = "ssl_tasks.owner"


def owner() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _client(uri: str):  # noqa: ANN202 - mlflow types stay inside this module
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def local_store(root: Path) -> Path:
    return Path(root).resolve() / "mlflow"


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's local sqlite store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = local_store(root)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def ensure_experiment(uri: str, name: str, root: Path | None = None) -> str:
    """The experiment's id, creating it (and a new sqlite store) once, under a file lock.

    Two stages opening a new sqlite store at once would both run MLflow's schema migrations and
    one would fail; the lock serialises that. A local store keeps artifacts beside its database,
    whichever workspace creates the experiment.
    """
    db = _sqlite_path(uri)
    if db is None:
        return _get_or_create(uri, name, None)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / ".init.lock", "w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        return _get_or_create(uri, name, (db.parent / "artifacts" / name).as_uri())


def _get_or_create(uri: str, name: str, artifact_location: str | None) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
    if exp.tags.get(KIND_TAG) is None:  # a store made before the tag: set it so the UI opens on the runs table
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, EXPERIMENT_TAGS[KIND_TAG])
    return exp.experiment_id


def start_run(uri: str, experiment_id: str, name: str, params: Mapping[str, Any], tags: Mapping[str, str],
              started: float | None = None) -> str:
    """Create a run (status RUNNING) with flattened params and tags; return its id. ``started`` (seconds since the
    epoch) back-dates its start to when the work began, so a run logged after the fact shows its real duration."""
    client = _client(uri)
    start_ms = None if started is None else int(started * 1000)
    run = client.create_run(experiment_id, start_time=start_ms, run_name=name,
                            tags={**{k: str(v) for k, v in tags.items()}, OWNER_TAG: owner()})
    flat = flatten(params)
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def log_epoch(uri: str, run_id: str, metrics: Mapping[str, float]) -> None:
    """Per-epoch metrics, stepped by the ``epoch`` entry."""
    step = int(metrics.get("epoch", 0))
    log_metrics(uri, run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=step)


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(_key(k), float(v), ts, step) for k, v in metrics.items() if math.isfinite(float(v))]
    client = _client(uri)
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i : i + 500])


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    client = _client(uri)
    if Path(path).is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = _client(uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def finish(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status=status)


def reopen(uri: str, run_id: str) -> None:
    """Status RUNNING again (a killed run resumed by a new attempt)."""
    _client(uri).update_run(run_id, status="RUNNING")


def status(uri: str, run_id: str) -> str:
    return _client(uri).get_run(run_id).info.status


def running_runs(uri: str, experiment_id: str) -> list[tuple[str, str]]:
    """(run id, owner tag) of every RUNNING run of the experiment."""
    runs = _client(uri).search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    return [(r.info.run_id, r.data.tags.get(OWNER_TAG, "")) for r in runs]


def parent_of(uri: str, run_id: str) -> str | None:
    return _client(uri).get_run(run_id).data.tags.get("mlflow.parentRunId")


def run_exists(uri: str, run_id: str) -> bool:
    try:
        _client(uri).get_run(run_id)
        return True
    except Exception:
        return False


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _key(k: str) -> str:
    """MLflow metric names allow letters, digits, _ - . space / only."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in k)


def ui_runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table. ``#/experiments/<id>`` alone opens MLflow 3.17's GenAI overview (traces, tokens,
    cost) whatever the experiment's kind tag says; ``/runs`` opens the table of runs by name."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the experiment called ``name``; None when there is none yet (nothing is created)."""
    exp = _client(uri).get_experiment_by_name(name)
    return None if exp is None else exp.experiment_id


def ui_compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The MLflow UI page that puts ``run_ids`` side by side (every param and metric, at full precision)."""
    import json

    runs = json.dumps(list(run_ids), separators=(",", ":"))
    return f"{base.rstrip('/')}/#/compare-runs?runs={runs}&experiments={json.dumps([experiment_id])}"


def latest_run(uri: str, experiment_name: str, tags: Mapping[str, str]) -> Any | None:
    """The most recently started run of the experiment carrying every tag in ``tags`` (None if there is none)."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        return None
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    found = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None
