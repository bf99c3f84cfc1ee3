"""MLflow after a kill (issue 25, fault matrix): a stage killed while its run was open left it RUNNING for ever (the
compare stage's parent run, a pretrain run of an abandoned configuration), and the runs a killed compare had adopted
stayed with that dead parent. The next compare closes every RUNNING run whose process on this machine is gone as
KILLED and re-adopts the children of a killed parent; a killed pretrain that is resumed reopens its own run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_tasks.pipeline import runs
from ssl_tasks.tracking import mlflow_tracking as mt


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def store(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[str, str]:
    """One sqlite store for the module (creating one costs seconds), an experiment per test."""
    root = tmp_path_factory.getbasetemp() / "orphan-store"
    root.mkdir(exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, mt.ensure_experiment(uri, request.node.name)


def test_runs_of_dead_processes_are_closed_and_their_children_readopted(store: tuple[str, str]) -> None:
    uri, exp = store
    host = mt.owner().rpartition(":")[0]
    dead_parent = mt.start_run(uri, exp, "killed compare", {}, {"kind": "pipeline"})
    mt.set_tags(uri, dead_parent, {mt.OWNER_TAG: f"{host}:{_dead_pid()}"})
    child = mt.start_run(uri, exp, "simclr", {}, {"kind": "ssl"})
    mt.finish(uri, child)
    mt.set_tags(uri, child, {"mlflow.parentRunId": dead_parent})
    live = mt.start_run(uri, exp, "training elsewhere", {}, {})  # this process: alive
    remote = mt.start_run(uri, exp, "another machine", {}, {})
    mt.set_tags(uri, remote, {mt.OWNER_TAG: f"not-{host}:1"})

    assert runs.close_orphans(uri, exp) == [dead_parent]
    assert [mt.status(uri, r) for r in (dead_parent, live, remote)] == ["KILLED", "RUNNING", "RUNNING"]
    parent = mt.start_run(uri, exp, "compare", {}, {"kind": "pipeline"})
    assert runs.adopt(uri, parent, [child]) == [child] and mt.parent_of(uri, child) == parent


def test_a_resumed_pretrain_reopens_its_killed_run(store: tuple[str, str], tmp_path: Path) -> None:
    uri, exp = store
    marker = tmp_path / "run.mlflow.json"
    first = runs.resume_or_start(uri, exp, marker, "simclr", {}, {})
    mt.set_tags(uri, first, {mt.OWNER_TAG: f"{mt.owner().rpartition(':')[0]}:{_dead_pid()}"})  # its stage was killed
    assert runs.close_orphans(uri, exp) == [first]
    again = runs.resume_or_start(uri, exp, marker, "simclr", {}, {})
    assert again == first and mt.status(uri, first) == "RUNNING"
    assert runs.close_orphans(uri, exp) == []  # owned by this live process now
