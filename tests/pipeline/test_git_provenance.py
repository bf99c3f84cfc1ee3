"""Which code a run came from: MLflow runs carry ``git_commit`` and ``git_dirty``, and a pipeline's parent run is named
``... @ <commit>+dirty`` when tracked files (an edited params.yaml) differ from that commit. Against a real git
repository and a real sqlite MLflow store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ssl_tasks.pipeline import runs
from ssl_tasks.pipeline.compare import compare
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.params import parse_params
from ssl_tasks.tracking import mlflow_tracking as mt

REPO = Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runs"] = {"simclr": raw["runs"]["simclr"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "params.yaml", "dvc.lock")
    _git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_git_state_is_dirty_when_tracked_files_differ(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert runs.git_state(repo) == (head, False)
    (repo / "notes.txt").write_text("untracked")  # untracked files are not the code
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # rewritten by every dvc repro: results
    assert runs.git_state(repo) == (head, False)
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "# edited\n")
    assert runs.git_state(repo) == (head, True)
    assert runs.git_tags(repo) == {"git_commit": head, "git_dirty": "true"}
    assert runs.git_state(tmp_path_factory.mktemp("not-a-repo")) == ("unknown", False)


def _results(root: Path, uri: str, exp: str) -> None:
    """The evaluation results compare reads: one run and one baseline, each with its MLflow run."""
    for name, kind in (("simclr", "ssl"), ("raw_pixels@digits", "raw_pixels")):
        rid = mt.start_run(uri, exp, name, {}, {})
        mt.finish(uri, rid)
        row = {"dataset": "digits", "kind": kind, "objective": "simclr" if kind == "ssl" else "-",
               "encoder": "small_cnn", "metrics": {"knn/top1": 0.9, "linear/top1": 0.8}, "mlflow_run_id": rid}
        out = Layout(root).eval_metrics("run-simclr" if kind == "ssl" else "baselines-digits")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": {name: row}}))


def test_parent_run_of_an_edited_checkout_says_dirty(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = parse_params(yaml.safe_load((repo / "params.yaml").read_text()), REPO)
    uri, exp = runs.tracking(params, repo)
    _results(repo, uri, exp)
    head = _git(repo, "rev-parse", "HEAD")

    def latest_parent():  # noqa: ANN202
        return mt.latest_run(uri, params.tracking.experiment, {"kind": "pipeline"})

    compare(params, Layout(repo))
    clean = latest_parent()
    assert clean.info.run_name == f"digits: simclr @ {head[:7]}"
    assert clean.data.tags["git_commit"] == head and clean.data.tags["git_dirty"] == "false"

    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("temperature: 0.2",
                                                                                 "temperature: 0.3"))
    compare(params, Layout(repo))
    dirty = latest_parent()
    assert dirty.info.run_id != clean.info.run_id
    assert dirty.info.run_name == f"digits: simclr @ {head[:7]}+dirty"
    assert dirty.data.tags["git_commit"] == head and dirty.data.tags["git_dirty"] == "true"
