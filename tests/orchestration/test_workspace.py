"""Workspaces on real files and real DVC: where a run works, its source copy and params, its lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import copy_project

from ssl_tasks.orchestration.dvc_runner import cache_dir, stage_order
from ssl_tasks.orchestration.workspace import (
    new_run_ids,
    prepare_workspace,
    resolve_workspace,
    source_files,
    workspace_lock,
)

REPO = Path(__file__).resolve().parents[2]


def test_source_files_are_the_projects_sources() -> None:
    files = source_files(REPO)
    assert "dvc.yaml" in files and ".dvc/config" in files and "ssl_tasks/pipeline/cli.py" in files
    assert "ssl_tasks/orchestration/workspace.py" in files and "flows/pipeline.py" in files
    assert "params.yaml" not in files and "dvc.lock" not in files  # a workspace writes its own
    assert not any(f.startswith(("data/", "artifacts/", "mlflow/", "workspaces/", ".venv/")) for f in files)


def test_source_files_without_git_fall_back_to_the_known_sources(tmp_path: Path) -> None:
    for f in ("dvc.yaml", "params.yaml", "ssl_tasks/a.py", "ssl_tasks/__pycache__/a.pyc", "notes.txt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    assert source_files(tmp_path) == ["dvc.yaml", "ssl_tasks/a.py"]  # tmp_path is no git repository


def test_one_flow_run_per_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with workspace_lock(ws), pytest.raises(RuntimeError, match="in use by another flow run"), workspace_lock(ws):
        pass
    with workspace_lock(tmp_path / "ws"):  # released
        pass
    with workspace_lock(None), workspace_lock(None):  # the project root: DVC's own lock guards it
        pass


def test_resolve_workspace_takes_the_run_ids_it_is_given(tmp_path: Path) -> None:
    def ids() -> tuple[str, str]:
        return "brave-otter", "0a1b2c3d-4e5f-6789-abcd-ef0123456789"

    assert resolve_workspace(tmp_path, None, False, ids) is None  # no parameters: the project root
    assert resolve_workspace(tmp_path, None, True, ids) == tmp_path / "workspaces" / "brave-otter-0a1b2c3d"
    assert resolve_workspace(tmp_path, "new", False, ids) == tmp_path / "workspaces" / "brave-otter-0a1b2c3d"
    assert resolve_workspace(tmp_path, "text", True, ids) == (tmp_path / "workspaces" / "text").resolve()
    assert resolve_workspace(tmp_path, str(tmp_path / "elsewhere"), True, ids) == (tmp_path / "elsewhere").resolve()
    assert resolve_workspace(tmp_path.resolve(), str(tmp_path), False, ids) is None
    with pytest.raises(ValueError, match="never to the project's own params.yaml"):
        resolve_workspace(tmp_path.resolve(), str(tmp_path), True, ids)
    name, rid = new_run_ids()  # the default outside a flow run
    assert name.startswith("run-") and len(rid) == 32
    assert resolve_workspace(tmp_path, "", True).name.startswith("run-")


def test_prepare_creates_then_refreshes_a_workspace_on_the_projects_dvc_cache(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "proj")
    ws = tmp_path / "proj" / "workspaces" / "w1"
    lines: list[str] = []
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    prepare_workspace(root, ws, params, {"epochs": 3}, lines.append)

    assert lines[-1].startswith(f"created workspace {ws} (") and str(cache_dir(root)) in lines[-1]
    assert (ws / "ssl_tasks" / "orchestration" / "workspace.py").read_text() == \
        (root / "ssl_tasks" / "orchestration" / "workspace.py").read_text()
    text = (ws / "params.yaml").read_text()
    assert text.splitlines()[1] == '# {"epochs": 3}' and yaml.safe_load(text)["train"]["epochs"] == 3
    assert json.loads((ws / ".flow" / "parameters.json").read_text()) == {"epochs": 3}
    assert not (ws / "dvc.lock").exists() and not (ws / ".git").exists()
    assert cache_dir(ws) == cache_dir(root)  # the project's cache, so its run cache too
    assert "core" in (ws / ".dvc" / "config.local").read_text()
    assert stage_order(ws) == stage_order(root)  # DVC without git plans the same DAG

    # Refresh: a source file the project dropped goes, a new one comes, params.yaml is kept without parameters.
    (root / "ssl_tasks" / "orchestration" / "run.py").unlink()
    (root / "ssl_tasks" / "orchestration" / "extra.py").write_text("X = 1\n")
    (ws / "params.yaml").write_text(text + "# edited in the workspace\n")
    prepare_workspace(root, ws, None, {}, lines.append)
    assert lines[-1].startswith(f"refreshed workspace {ws}")
    assert not (ws / "ssl_tasks" / "orchestration" / "run.py").exists()
    assert (ws / "ssl_tasks" / "orchestration" / "extra.py").read_text() == "X = 1\n"
    assert (ws / "params.yaml").read_text().endswith("# edited in the workspace\n")

    fresh = prepare_workspace(root, tmp_path / "w2", None, {}, lines.append)  # new, no parameters: the root's
    assert (fresh / "params.yaml").read_text() == (root / "params.yaml").read_text()
