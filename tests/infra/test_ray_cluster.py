"""The pretraining stage on a real two-node Ray cluster on this machine, joined through ``RAY_ADDRESS``.

A module fixture starts the cluster with ``ray start --head`` and ``ray start --address`` (1 CPU per node, so a
2-worker run at 1 CPU per worker must spread over both nodes); ``ssl-tasks pretrain`` runs in a copy of the
project (tiny params) and only ``RAY_ADDRESS`` points it at the cluster: ``ray.address`` stays null in
params.yaml and nothing in ``ssl_tasks/`` changes.

Killed node: the stage pauses one worker in epoch 2 (the test plug-in ``tests/fault_plugin.py``, with a long
``delay_s`` and ``kill: false``, so it never kills itself); once the Train controller has registered the epoch-1
checkpoint (its snapshot file appears), the test SIGKILLs every process of the second node (raylet, agents, the
worker on it: a lost machine or pod), waits until the GCS declares the node dead, then starts a replacement node
with the same resources, as KubeRay does for a worker pod. Ray Train restarts the worker group once the
replacement has joined (the one surviving 1-CPU node cannot hold 2 workers) and the run resumes from its epoch-1
checkpoint. Nodes share the machine's IP, so placement is checked by node id (Ray's state API), never by IP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import copy_project
from local_ray_cluster import LocalRayCluster

pytestmark = pytest.mark.ray_cluster

BIN = Path(sys.executable).parent
EPOCHS_KILL = 3


@pytest.fixture(scope="module")
def cluster():
    c = LocalRayCluster(head_cpus=1)  # stops what it started if start-up fails
    try:
        c.add_node(num_cpus=1, resources={"node2": 1}, name="node2")
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("rayproj") / "p")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["datasets"] = {"digits": raw["datasets"]["digits"]}
    raw["runs"] = {"simclr": {**raw["runs"]["simclr"], "encoder_kwargs": {"width": 8}}}
    raw["train"].update(epochs=2, batch_size=64, warmup_epochs=0, num_workers=2)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    res = subprocess.run([str(BIN / "ssl-tasks"), "ingest", "--dataset", "digits"], check=False, cwd=root, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return {**env, "PATH": f"{BIN}:{os.environ['PATH']}", **extra}


def _pretrain_cmd() -> list[str]:
    return [str(BIN / "ssl-tasks"), "pretrain", "--run", "simclr"]


def _workers(c: LocalRayCluster) -> dict[str, str]:
    """actor id -> node id of every Ray Train worker the cluster has run (dead ones included)."""
    from ray.util.state import list_actors

    # RAY_ADDRESS of this process (the session's shared cluster, or one a ray.init() here set) wins over the
    # explicit dashboard address: the state API then lists the other cluster's actors (none of these)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        acts = list_actors(address=c.dashboard_url, filters=[("class_name", "=", "RayTrainWorker")], limit=1000,
                           raise_on_missing_output=False)
    return {a.actor_id: a.node_id for a in acts}


def _history(root: Path) -> list[dict]:
    return json.loads((root / "artifacts" / "runs" / "simclr" / "pretrain" / "seed-0" / "history.json").read_text())


def test_pretrain_joins_cluster_from_ray_address_and_spreads_over_both_nodes(cluster: LocalRayCluster,
                                                                            project: Path) -> None:
    before = _workers(cluster)
    res = subprocess.run(_pretrain_cmd(), check=False, cwd=project, env=_env(RAY_ADDRESS=cluster.address),
                         capture_output=True, text=True, timeout=420)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Connecting to existing Ray cluster" in out  # joined ours, did not start a local one
    assert [h["epoch"] for h in _history(project)] == [1.0, 2.0]
    new = {a: n for a, n in _workers(cluster).items() if a not in before}
    assert len(new) == 2, new
    assert sorted(new.values()) == sorted([cluster.head.node_id, cluster.nodes[1].node_id])  # one worker per node


def test_without_ray_address_the_stage_starts_its_own_ray_even_next_to_a_cluster(cluster: LocalRayCluster) -> None:
    """``ray start`` records its cluster where a plain ``ray.init()`` looks for one (here: under RAY_TMPDIR);
    without RAY_ADDRESS the stage must still start a local Ray instead of joining (and then failing on num_cpus)."""
    assert str(cluster.gcs_port) in (cluster.temp_dir / "ray_current_cluster").read_text()  # discoverable
    code = ("import ray\nfrom ssl_tasks.training.ray_runner import init_ray\ninit_ray()\n"
            "print('GCS', ray.get_runtime_context().gcs_address, flush=True)\nray.shutdown()\n")
    res = subprocess.run([sys.executable, "-c", code], check=False, env=_env(RAY_TMPDIR=str(cluster.root)),
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    gcs = next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("GCS "))
    assert not gcs.endswith(f":{cluster.gcs_port}"), "joined the ray start cluster without RAY_ADDRESS"


def test_killed_node_is_replaced_and_run_resumes_from_last_checkpoint(cluster: LocalRayCluster, project: Path,
                                                                       tmp_path: Path) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["epochs"] = EPOCHS_KILL  # a new job key: starts fresh, not from the first test's checkpoint
    paused = tmp_path / "paused"
    # the test plug-in's SimCLR pauses worker 1 in epoch 2 (11 steps per epoch: 2 workers x 64 of 1438 images),
    # never killing itself: the node goes down instead
    shutil.copy(Path(__file__).resolve().parents[1] / "fault_plugin.py", project / "fault_plugin.py")
    raw["plugins"] = ["fault_plugin"]
    raw["runs"]["simclr"] = {**raw["runs"]["simclr"], "objective": "faulty_simclr", "objective_kwargs": {
        **raw["runs"]["simclr"]["objective_kwargs"], "fault_rank": 1, "fault_after_steps": 11 + 2,
        "marker": str(paused), "delay_s": 600, "kill": False}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    victim = cluster.nodes[1]
    before = _workers(cluster)
    log = tmp_path / "pretrain.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_pretrain_cmd(), cwd=project, stdout=f, stderr=subprocess.STDOUT, text=True,
                                env=_env(RAY_ADDRESS=cluster.address))
    t0, phases = time.monotonic(), {}
    try:
        deadline = time.monotonic() + 240
        while not paused.exists():  # worker 1 is in epoch 2: the epoch-1 checkpoint has been reported
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, "the run never reached epoch 2\n" + log.read_text()[-4000:]
            time.sleep(0.2)
        phases["paused in epoch 2"] = time.monotonic() - t0
        # the Train controller writes this snapshot when it registers a checkpoint (here: epoch 1's)
        while not list((project / "artifacts" / ".ray").glob("simclr-*/checkpoint_manager_snapshot.json")):
            assert time.monotonic() < deadline, "no checkpoint was registered\n" + log.read_text()[-4000:]
            time.sleep(0.2)
        cluster.kill_node(victim)
        phases["node dead in GCS"] = time.monotonic() - t0
        replacement = cluster.add_node(num_cpus=1, resources={"node2": 1}, name="node2-replacement")
        phases["replacement joined"] = time.monotonic() - t0
        proc.wait(timeout=300)
        phases["run finished"] = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print("phases (s since start):", {k: round(v, 1) for k, v in phases.items()})
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    assert paused.read_text() == "paused\n"
    assert "[simclr] resumed from checkpoint at epoch 1" in out  # not from scratch
    assert [h["epoch"] for h in _history(project)] == [1.0, 2.0, 3.0]
    new = {a: n for a, n in _workers(cluster).items() if a not in before}
    # first group: head + the killed node; after the restart: head + its replacement
    assert sorted(new.values()) == sorted([cluster.head.node_id, cluster.head.node_id, victim.node_id,
                                           replacement.node_id]), new
