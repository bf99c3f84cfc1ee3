"""Both UIs of `make ui` in a real browser, as a person uses them: headless Chromium, driven over the DevTools
protocol, fills the Prefect deployment's "Custom run" form and submits it; the run it starts completes (ingest,
validate, tokenizer and baselines restored from what test_flow.py's first run left in the project's DVC cache;
pretraining with the form's epochs, evaluation and compare run), its page shows it, the MLflow comparison link of `ssl-tasks
ui-link` opens on each method's k-NN and linear accuracies to three decimals, and the experiment link `make ui` prints
opens on the runs table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from browser import browser_page
from prefect_helpers import api as _api
from prefect_helpers import free_port as _free_port
from prefect_helpers import tails as _tails
from prefect_helpers import wait_for as _wait

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CACHED = ("ingest@digits", "validate@digits", "tokenizer@digits", "baselines@digits")

# The schema form's field for a flow parameter, found by its label as a person finds it.
FIELD = ("[...document.querySelectorAll('.schema-form-property')].find(p => "
         "(p.querySelector('.schema-form-property__label') || {{}}).innerText.trim().split(' ')[0] === '{name}')")


def _ui(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "infra/local/ui.sh", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_custom_run_from_the_prefect_ui_then_the_mlflow_comparison(first_run: dict[str, Any], project: Path,
                                                                   fast: dict[str, Any], tmp_path: Path) -> None:
    assert first_run["state"].is_completed()  # its stages are in the project's DVC cache
    if not (project / ".venv").exists():  # `make ui` runs the project's .venv: this one
        (project / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    pport, mport = _free_port(), _free_port()
    prefect, mlflow = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{mport}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI")}
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # the served deployment picks the run up within 2 s (default 10)
    run_dir = project / ".prefect" / "run"
    logs = tuple(run_dir / f"{n}.log" for n in ("prefect", "serve", "mlflow"))
    try:
        started = _ui(project, env, "start", str(pport), str(mport))
        assert started.returncode == 0, started.stdout + started.stderr + _tails(logs)
        assert f"Prefect UI : {prefect}" in started.stdout and f"MLflow UI  : {mlflow}" in started.stdout
        for step in ("starting the Prefect server", "serving the pipeline deployment", "waiting for the MLflow UI"):
            assert step in started.stdout, started.stdout  # no silent wait: one line per step
        # The experiment link it prints is the runs table (a bare #/experiments/<id> is MLflow's GenAI overview).
        runs_link = re.search(r"^MLflow UI  : (\S+)", started.stdout, re.M).group(1)
        assert re.fullmatch(rf"{re.escape(mlflow)}/#/experiments/\d+/runs", runs_link), started.stdout
        dep = _wait("the served deployment ssl-pipeline/default",
                    lambda: _api(f"{prefect}/api", "GET", "/deployments/name/ssl-pipeline/default"), 120, logs=logs)

        with browser_page(tmp_path) as page:
            # Deployments -> ssl-pipeline/default -> Run -> Custom run, as the README and `make ui` say.
            page.goto(f"{prefect}/deployments/deployment/{dep['id']}")
            page.click("Run", timeout=90)
            page.click("Custom run")
            page.wait("the Custom run form", f"!!({FIELD.format(name='overrides')})", 60)
            objectives = FIELD.format(name="objectives")
            if not page.js(f"!!({objectives}).querySelector('textarea')"):  # an empty list: one item to type in
                page.js(f"[...({objectives}).querySelectorAll('button')].find(b => b.innerText.trim() === "
                        "'Add item').click()")
                page.wait("the new objectives item", f"!!({objectives}).querySelector('textarea')", 10)
            page.fill(f"({objectives}).querySelector('textarea')", "simclr")
            page.fill(f"({FIELD.format(name='epochs')}).querySelector('input')", "2")
            page.fill(f"({FIELD.format(name='overrides')}).querySelector('textarea')", json.dumps(fast, indent=2))
            page.click("Submit")
            runs = _wait("the flow run the form created", lambda: _api(
                f"{prefect}/api", "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}}), 60,
                every=0.5, logs=logs)
            assert len(runs) == 1, runs
            rid = runs[0]["id"]
            page.wait_text(runs[0]["name"], 60)  # the deployment's page, where Submit leads, lists it

            # The API has the run the form created, from the deployment, with the parameters typed in.
            fr = _api(f"{prefect}/api", "GET", f"/flow_runs/{rid}")
            assert fr["deployment_id"] == dep["id"], fr
            given = {k: v for k, v in fr["parameters"].items() if v not in ("", 0, [], {}, None)}
            assert given == {"objectives": ["simclr"], "epochs": 2, "overrides": fast}, fr["parameters"]

            def finished() -> dict[str, Any] | None:
                run = _api(f"{prefect}/api", "GET", f"/flow_runs/{rid}")
                return run if run["state_type"] in TERMINAL else None

            final = _wait("the flow run started from the UI", finished, 600, every=3, logs=logs)
            assert final["state_type"] == "COMPLETED", f"{final['state']}\n" + _tails(logs)
            page.click(final["name"], "a")  # its page: name, state and one task run per dvc.yaml stage
            page.wait("the flow run's page", f"location.pathname.endsWith('/flow-run/{rid}')", 30)
            heading = "(document.querySelector('.page-heading-flow-run') || {innerText: ''}).innerText"
            # lineage, ingest, validate, tokenizer, baselines, pretrain (simclr), evaluate (simclr), compare
            page.wait(f"the heading of {final['name']}: Completed, 8 Task runs",
                      f"{heading}.includes({json.dumps(final['name'])}) && {heading}.includes('8 Task runs') && "
                      "(document.querySelector('.page-heading-flow-run .state-badge') || {innerText: ''})"
                      ".innerText.trim() === 'Completed'", 60)

            # It worked in its own workspace with the form's epochs, restoring what the first run computed.
            ws = project / "workspaces" / f"{final['name']}-{rid.replace('-', '')[:8]}"
            params = yaml.safe_load((ws / "params.yaml").read_text())
            assert params["train"]["epochs"] == 2 and list(params["runs"]) == ["simclr"]
            lines = [g["message"] for g in _api(f"{prefect}/api", "POST", "/logs/filter",
                                                 {"logs": {"flow_run_id": {"any_": [rid]}}, "limit": 200})]
            text = "\n".join(lines)
            for stage in CACHED:
                assert f"Stage '{stage}' is cached - skipping run" in text, (stage, text[-3000:])
            assert "Running stage 'pretrain@simclr'" in text, text[-3000:]

            # The MLflow comparison link (what `make ui` prints) compares this run's results.
            link = subprocess.run([str(BIN / "ssl-tasks"), "ui-link", "--base", mlflow], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert link.returncode == 0 and link.stdout.startswith(f"{mlflow}/#/compare-runs?runs="), link.stderr
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
            exp = client.get_experiment_by_name("ssl-tasks")
            latest = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'", order_by=["start_time DESC"])[0]
            assert latest.data.tags["prefect_flow_run_id"] == rid  # the link is this run's comparison
            children = latest.data.tags["child_runs"].split(",")
            assert children and all(c in link.stdout for c in children), (children, link.stdout)
            board = pd.read_csv(ws / "artifacts" / "leaderboard.csv")
            tracked = board[board["kind"] != "random_init"]  # random-init rows live in their run's metrics
            want = {(r["name"], col): f"{r[col]:.3f}".rstrip("0").rstrip(".")  # the UI drops trailing zeros
                    for _, r in tracked.iterrows() for col in ("knn/top1", "linear/top1")}

            def shown(text: str) -> bool:
                if f"Comparing {len(tracked)} Runs" not in text or "Metrics" not in text:
                    return False
                values = set(re.findall(r"\b[01]\.\d{1,3}\b", text[text.index("Metrics"):]))
                return all(name in text for name, _ in want) and set(want.values()) <= values

            page.goto(link.stdout.strip())
            page.until(f"the comparison of {sorted(tracked['name'])} with {want}", shown, 90)

            # The experiment link `make ui` printed opens on the runs table, the latest parent named in it, not on
            # MLflow's GenAI overview (traces, tokens, cost).
            page.goto(runs_link)
            page.until(f"the runs table with {latest.info.run_name!r}", lambda text: "Run Name" in text
                       and latest.info.run_name in text and "Total Cost" not in text, 90)
    finally:
        _ui(project, env, "stop")
