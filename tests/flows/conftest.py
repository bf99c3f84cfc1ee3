"""Prefect flow tests: an own PREFECT_HOME per session, quiet tools, throwaway project copies.

Nothing here writes into the repository: every flow runs on a copy of the project's source
files in a tmp dir (its own git repo, DVC cache and MLflow store).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports prefect (its settings are read at import).
_PREFECT_HOME = tempfile.mkdtemp(prefix="ssl-prefect-home-")
ENV = {
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "DVC_NO_ANALYTICS": "1",
}
os.environ.update(ENV)
for _k in ("PREFECT_API_URL", "PREFECT_API_KEY"):
    os.environ.pop(_k, None)

REPO = Path(__file__).resolve().parents[2]

# One SimCLR epoch, two cheap baselines, short evaluation: the whole pipeline in ~2 minutes on 2 cores.
FAST = {
    "baselines.supervised_epochs": 1,
    "baselines.include": ["raw_pixels"],
    "datasets.digits.baselines": ["raw_pixels"],  # params.yaml gives digits the supervised ceiling too
    "evaluation.settings.finetune_epochs": 2,
    "evaluation.settings.linear_epochs": 20,
}


@pytest.fixture(scope="session", autouse=True)
def _isolated_env() -> Iterator[None]:
    """No outside tracking server (the Ray cluster is the session's own: tests/conftest.py); remove this session's
    PREFECT_HOME at the end."""
    saved = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI",) if k in os.environ}
    yield
    os.environ.update(saved)
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def make_project(dest: Path) -> Path:
    """A throwaway copy of the project's source files (as a workspace gets them) with its own git repo."""
    from ssl_tasks.orchestration.workspace import source_files

    dest.mkdir(parents=True)
    for f in [*source_files(REPO), "params.yaml"]:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    assert (dest / ".dvc" / "config").is_file() and (dest / "dvc.yaml").is_file()
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="session")
def fast() -> dict[str, object]:
    return dict(FAST)


@pytest.fixture(scope="session")
def project_factory():  # noqa: ANN201
    return make_project


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real ``prefect server start`` (its own PREFECT_HOME and SQLite database, a free port) shared by the tests
    that drive a server over REST from other processes: test_deployment.py (a served deployment) and
    test_work_pool.py (a work pool and its worker). Their deployments, pools and flow runs have names of their own,
    so neither sees the other's; a server start costs 20-40 s on a loaded 2-core machine. ``base`` (the API URL),
    ``env`` (the server's environment, for the tests' own processes to start from) and ``log`` (its output)."""
    from prefect_helpers import api, free_port, stop_group, wait_for

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_HOME=str(home / "prefect-home"), PREFECT_SERVER_UI_V2_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = home / "server.log"
    server = None
    try:
        with log.open("w") as out:
            server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                                       "--host", "127.0.0.1", "--port", str(port)],
                                      cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_for("the Prefect server", lambda: api(base, "GET", "/health") is True, 180, logs=(log,))
        yield {"base": base, "env": env, "log": log}
    finally:
        stop_group(server)


@pytest.fixture(scope="session")
def prefect_harness(prefect_server: dict[str, Any]) -> Iterator[None]:
    """The real Prefect engine in this process against the session's local API server and database
    (``prefect_server``; Prefect's own ``prefect_test_harness`` would start a second server); the logs and events
    still queued are sent before the fixture ends."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server["base"]}):
        try:
            yield
        finally:
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project copy of test_flow.py and test_ui.py: the UI's run restores the first run's stages from its cache."""
    return make_project(tmp_path_factory.mktemp("flow") / "proj")


@pytest.fixture(scope="session")
def first_run(project: Path, prefect_harness: None, fast: dict[str, Any]) -> dict[str, Any]:
    """One fast SimCLR run of the flow in a workspace of ``project`` (its state and seconds)."""
    from flows.pipeline import ssl_pipeline

    t0 = time.perf_counter()
    state = ssl_pipeline(objectives=["simclr"], epochs=1, overrides=fast, project_root=str(project),
                         return_state=True)
    return {"state": state, "seconds": time.perf_counter() - t0}
