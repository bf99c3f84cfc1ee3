"""`python -m flows.deploy` served against a real local Prefect server (the session's, shared with test_work_pool.py:
conftest.py); two runs at once via the REST API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from prefect_helpers import api as _api
from prefect_helpers import stop_group as _stop
from prefect_helpers import tails as _tails
from prefect_helpers import wait_for as _wait

pytestmark = pytest.mark.slow
DEPLOYMENT = "test"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_two_runs_at_once_each_in_its_own_workspace(tmp_path: Path, project_factory: Any, fast: dict[str, Any],
                                                    prefect_server: dict[str, Any]) -> None:
    project = project_factory(tmp_path / "proj")
    base = prefect_server["base"]
    env = {**prefect_server["env"], "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    serve_log = tmp_path / "serve.log"
    logs = (prefect_server["log"], serve_log)
    serve = None
    try:
        with serve_log.open("w") as out:
            serve = subprocess.Popen([sys.executable, "-m", "flows.deploy", "--name", DEPLOYMENT, "--limit", "2",
                                      "--project-root", str(project)],
                                     cwd=project, env={**env, "PREFECT_API_URL": base}, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        dep = _wait("the deployment", lambda: _api(base, "GET", f"/deployments/name/ssl-pipeline/{DEPLOYMENT}"),
                    120, every=2, logs=logs)
        assert dep["parameters"] == {"project_root": str(project)}

        runs = {}
        for objective in ("simclr", "byol"):
            fr = _api(base, "POST", f"/deployments/{dep['id']}/create_flow_run",
                      {"parameters": {"objectives": [objective], "epochs": 1, "overrides": fast}})
            runs[objective] = fr["id"]

        def finished() -> dict[str, Any] | None:
            states = {o: _api(base, "GET", f"/flow_runs/{rid}") for o, rid in runs.items()}
            return states if all(s["state_type"] in TERMINAL for s in states.values()) else None

        final = _wait("both flow runs", finished, 900, every=2, logs=logs)
        for objective, fr in final.items():
            assert fr["state_type"] == "COMPLETED", f"{objective}: {fr['state']}\n" + _tails(logs)
    finally:
        _stop(serve)  # the session's server stays up: with the server gone, serve ignores SIGTERM

    # They ran at the same time (limit 2), each in its own workspace.
    a, b = final["simclr"], final["byol"]
    assert a["start_time"] < b["end_time"] and b["start_time"] < a["end_time"]
    for objective, fr in final.items():
        other = ({"simclr", "byol"} - {objective}).pop()
        ws = project / "workspaces" / f"{fr['name']}-{fr['id'].replace('-', '')[:8]}"
        board = pd.read_csv(ws / "artifacts" / "leaderboard.csv")
        assert objective in set(board["name"]) and other not in set(board["name"])
        lock = yaml.safe_load((ws / "dvc.lock").read_text())
        assert set(lock["stages"]) == {"lineage", "ingest@digits", "validate@digits", "tokenizer@digits", "baselines@digits",
                                       f"pretrain@{objective}", f"evaluate@{objective}", "compare"}
        status = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "--json"], cwd=ws,
                                capture_output=True, text=True, env={**env, "DVC_NO_ANALYTICS": "1"})
        assert status.returncode == 0 and json.loads(status.stdout) == {"lineage": ["always changed"]}, (
            status.stdout + status.stderr)
    assert not (project / "dvc.lock").exists() and not (project / "data").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'")
    assert {p.data.tags["prefect_flow_run_id"] for p in parents} == set(runs.values())
