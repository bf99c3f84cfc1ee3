"""The ssl-pipeline flow on the real Prefect engine, DVC, Ray Train and MLflow (a throwaway project copy)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow
SIMCLR_STAGES = {"lineage", "ingest@digits", "validate@digits", "tokenizer@digits", "baselines@digits", "pretrain@simclr", "evaluate@simclr",
                 "compare"}


def test_bad_objective_fails_listing_valid_run_names(project: Path, prefect_harness: None) -> None:
    from flows.pipeline import ssl_pipeline

    before = sorted((project / "workspaces").glob("*"))
    state = ssl_pipeline(objectives=["nope"], project_root=str(project), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"'nope'.*valid run names: simclr, moco_v2, byol"):
        state.result()
    assert sorted((project / "workspaces").glob("*")) == before  # failed before any workspace was made


def test_flow_runs_every_stage_in_its_own_workspace(first_run: dict[str, Any], project: Path) -> None:
    state = first_run["state"]
    assert state.is_completed(), state.message
    out = state.result()
    ws = Path(out["workspace"])
    assert ws.parent == project / "workspaces" and ws.name.endswith(str(state.state_details.flow_run_id)[:8])
    assert out["stages"] == {s: "ran" for s in SIMCLR_STAGES}

    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == SIMCLR_STAGES
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert list(params["runs"]) == ["simclr"] and params["train"]["epochs"] == 1
    assert params["baselines"]["include"] == ["raw_pixels"]
    assert not (project / "dvc.lock").exists() and not (project / "data").exists()  # the root is untouched

    board = pd.read_csv(out["leaderboard_csv"])
    ref = board.set_index("name").loc["simclr", "reference"]
    assert ref.startswith("random_init-small_cnn-") and set(board["name"]) == {"simclr", ref, "raw_pixels@digits"}
    assert [r["name"] for r in out["leaderboard"]] == list(board["name"])
    assert board["knn/top1"].notna().all()

    # One MLflow store, the PROJECT's: a parent run (compare) with the stage runs as children.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    assert exp is not None and exp.artifact_location.startswith((project / "mlflow").as_uri())
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'")
    parents = [p for p in parents if p.data.tags["prefect_flow_run_id"] == str(state.state_details.flow_run_id)]
    assert len(parents) == 1  # (test_ui's run, if it ran first, has its own)
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} == {"simclr", "raw_pixels@digits"}  # random init: in simclr's run
    assert not (ws / "mlflow").exists()


def test_second_run_on_the_same_workspace_reruns_nothing(first_run: dict[str, Any], project: Path,
                                                         fast: dict[str, Any]) -> None:
    from flows.pipeline import ssl_pipeline

    ws = Path(first_run["state"].result()["workspace"])
    lock = (ws / "dvc.lock").read_text()
    board = (ws / "artifacts" / "leaderboard.csv").read_text()
    t0 = time.perf_counter()
    out = ssl_pipeline(objectives=["simclr"], epochs=1, overrides=fast, project_root=str(project),
                       workspace=str(ws))
    seconds = time.perf_counter() - t0
    assert out["workspace"] == str(ws)
    # DVC: "Stage ... didn't change, skipping"; lineage hashes the files params name on every run
    assert out["stages"] == {**{s: "unchanged" for s in SIMCLR_STAGES}, "lineage": "ran"}
    assert (ws / "dvc.lock").read_text() == lock
    assert (ws / "artifacts" / "leaderboard.csv").read_text() == board
    assert seconds < first_run["seconds"] / 2


def test_failing_stage_fails_the_flow_with_its_error_line(project: Path, prefect_harness: None) -> None:
    from flows.pipeline import ssl_pipeline
    from ssl_tasks.orchestration.dvc_runner import StageFailed

    bad = {"datasets.digits.source": "image_folder", "datasets.digits.path": "/nonexistent-ssl-tasks-data"}
    state = ssl_pipeline(objectives=["simclr"], overrides=bad, project_root=str(project), workspace="broken",
                         return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as err:
        state.result()
    msg = str(err.value)
    assert "stage ingest@digits failed" in msg
    assert "error: path /nonexistent-ssl-tasks-data does not exist" in msg  # ssl-tasks' own line
    lock_file = project / "workspaces" / "broken" / "dvc.lock"  # the lineage stage ran first and locked itself
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else {}
    assert set(lock.get("stages") or {}) <= {"lineage"}, "a stage after the failed ingest was locked"


def test_params_file_runs_in_a_workspace_with_dataset_paths_anchored(project: Path, prefect_harness: None) -> None:
    """``params_file`` (the language profile here) replaces params.yaml in a workspace; a relative dataset path
    means the project's, so the ingest error names the anchored path."""
    from flows.pipeline import ssl_pipeline
    from ssl_tasks.orchestration.dvc_runner import StageFailed

    raw = yaml.safe_load((project / "configs" / "text.yaml").read_text())
    raw["datasets"] = {"sst2": {**raw["datasets"]["sst2"], "path": "no-such-dir/sst2"}}
    raw["runs"] = {"simcse": raw["runs"]["simcse"]}
    (project / "configs" / "mine.yaml").write_text(yaml.safe_dump(raw))
    state = ssl_pipeline(params_file="configs/mine.yaml", project_root=str(project), workspace="text",
                         return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as err:
        state.result()
    assert f"error: path {project.resolve() / 'no-such-dir' / 'sst2'} does not exist" in str(err.value)
    written = yaml.safe_load((project / "workspaces" / "text" / "params.yaml").read_text())
    assert set(written["runs"]) == {"simcse"} and written["datasets"]["sst2"]["source"] == "text_table"
    missing = ssl_pipeline(params_file="configs/none.yaml", project_root=str(project), return_state=True)
    assert missing.is_failed()
    with pytest.raises(ValueError, match="params_file 'configs/none.yaml': no such file"):
        missing.result()
