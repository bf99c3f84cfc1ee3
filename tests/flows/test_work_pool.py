"""infra/prefect/prefect.yaml on a real local Prefect server (the session's, shared with test_deployment.py:
conftest.py): process work pool, worker, `gpu` tag limit.

The `quick` deployment is created with `prefect deploy` from a throwaway copy of the project,
a `prefect worker start --pool local-proc` subprocess picks its flow run up and runs it to
COMPLETED; the task runs carry the retry policy of the I/O stage (ingest) and the pretrain tags,
and the `gpu` tag concurrency limit exists on the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import copy_project
from prefect_helpers import api as _api
from prefect_helpers import stop_group as _stop
from prefect_helpers import tails as _tails
from prefect_helpers import wait_for as _wait

from ssl_tasks.orchestration.dvc_runner import GPU_TAG, PRETRAIN_TAG, RETRY_STAGES

POOL = "local-proc"
WORKER = "ssl-test-worker"
PREFECT = str(Path(sys.executable).parent / "prefect")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _cli(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    out = subprocess.run([PREFECT, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    with log.open("a") as fh:
        fh.write(f"$ prefect {' '.join(args)}\n{out.stdout}{out.stderr}\n")
    assert out.returncode == 0, f"prefect {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"


@pytest.mark.slow
def test_worker_runs_the_quick_deployment(tmp_path: Path, prefect_server: dict[str, Any]) -> None:
    project = copy_project(tmp_path / "proj")
    base = prefect_server["base"]
    env = {**prefect_server["env"], "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_CLI_PROMPT": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    client_env = {**env, "PREFECT_API_URL": base, "SSL_TASKS_ROOT": str(project)}
    cli_log, worker_log = tmp_path / "cli.log", tmp_path / "worker.log"
    logs = (prefect_server["log"], cli_log, worker_log)
    worker = None
    try:
        # The README's commands, as written (from the project root, SSL_TASKS_ROOT set).
        _cli(["work-pool", "create", POOL, "--type", "process"], project, client_env, cli_log)
        _cli(["concurrency-limit", "create", GPU_TAG, "1"], project, client_env, cli_log)
        _cli(["deploy", "--prefect-file", "infra/prefect/prefect.yaml", "--name", "quick"], project, client_env,
             cli_log)
        dep = _api(base, "GET", "/deployments/name/ssl-pipeline/quick")
        assert dep["work_pool_name"] == POOL and dep["entrypoint"] == "flows/pipeline.py:ssl_pipeline"
        assert dep["parameters"]["project_root"] == str(project) and dep["parameters"]["objectives"] == ["simclr"]

        with worker_log.open("w") as out:
            worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--name", WORKER],
                                      cwd=project, env=client_env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        fr = _api(base, "POST", f"/deployments/{dep['id']}/create_flow_run", {})
        rid = fr["id"]

        def finished() -> dict[str, Any] | None:
            run = _api(base, "GET", f"/flow_runs/{rid}")
            return run if run["state_type"] in TERMINAL else None

        final = _wait("the flow run", finished, 900, every=2, logs=logs)
        assert final["state_type"] == "COMPLETED", f"{final['state']}\n" + _tails(logs)

        # The worker (not a serve process) ran it, in a process of the pool, from the deployment.
        assert final["deployment_id"] == dep["id"]
        assert final["work_pool_name"] == POOL and final["work_queue_name"] == "default"
        assert final["infrastructure_pid"], final
        assert set(final["tags"]) >= {"ssl", "dvc", "smoke"}
        workers = _api(base, "POST", f"/work_pools/{POOL}/workers/filter", {})
        assert WORKER in {w["name"] for w in workers}
        text = worker_log.read_text(errors="replace")
        assert rid in text, _tails(logs)

        tasks = {t["name"]: t for t in _api(base, "POST", "/task_runs/filter",
                                           {"flow_runs": {"id": {"any_": [rid]}}})}
        assert {"ingest@digits", "pretrain@simclr", "evaluate@simclr", "compare"} <= set(tasks), sorted(tasks)
        assert all(t["state_type"] == "COMPLETED" for t in tasks.values()), {n: t["state_type"] for n, t in tasks.items()}
        ingest = tasks["ingest@digits"]["empirical_policy"]
        assert ingest["retries"] == RETRY_STAGES["ingest"] == 1 and ingest["retry_delay"] == 2, ingest
        assert not tasks["compare"]["empirical_policy"]["retries"]
        assert PRETRAIN_TAG in tasks["pretrain@simclr"]["tags"]
        assert GPU_TAG not in tasks["pretrain@simclr"]["tags"]  # the quick run trains on CPU: no GPU slot
        assert all(PRETRAIN_TAG not in t["tags"] for n, t in tasks.items() if not n.startswith("pretrain"))

        limit = _api(base, "GET", f"/concurrency_limits/tag/{GPU_TAG}")
        assert limit["tag"] == GPU_TAG and limit["concurrency_limit"] == 1 and limit["active_slots"] == []
        v2 = _api(base, "GET", f"/v2/concurrency_limits/tag:{GPU_TAG}")
        assert v2["limit"] == 1 and v2["active"] is True
    finally:
        _stop(worker)  # the session's server stays up (conftest.py)

    ws = project / "workspaces" / f"{final['name']}-{rid.replace('-', '')[:8]}"
    assert (ws / "artifacts" / "leaderboard.csv").is_file()
    assert not (project / "dvc.lock").exists()
