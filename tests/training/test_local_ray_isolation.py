"""A pipeline's local Ray sees only itself, even while another Ray runs on the machine (a second pipeline, a
``ray start`` cluster): Ray Train's placement-group cleaner looks its controller up through the state API with no
address, which failed with "Found multiple active Ray instances" and a traceback in the stage's log whenever two
ran at once (issue 26). ``init_ray`` now gives its cluster's processes their own address."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO
from local_ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow  # two Ray clusters (~20 s on 2 cores)

PROBE = """
import ray
from ssl_tasks.training.ray_runner import init_ray
init_ray()
own = ray.get_runtime_context().gcs_address

@ray.remote
def lookup():  # inside the cluster, as Ray Train's placement-group cleaner does: the state API with no address
    from ray.util.state import list_nodes
    return [n.node_ip + ":" + str(n.node_id) for n in list_nodes()]

print("nodes", len(ray.get(lookup.remote())), flush=True)

@ray.remote
def speak():  # a worker's line, which the driver prints behind its "(speak pid=...)" prefix
    print("worker line", flush=True)

ray.get(speak.remote())
import time; time.sleep(2)  # the driver's log monitor prints the worker's line
"""


def test_a_local_cluster_finds_itself_next_to_another_ray() -> None:
    other = LocalRayCluster(head_cpus=1)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}  # a user's shell
        env["PYTHONPATH"] = str(REPO)
        res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    finally:
        other.shutdown()
    assert res.returncode == 0 and "nodes 1" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    assert "multiple active Ray instances" not in res.stdout + res.stderr
    # piped output is a log: plain text, no colour codes (Ray's dashboard line, worker prefixes; issue 26)
    assert "\x1b[" not in res.stdout + res.stderr, (res.stdout + res.stderr)[-2000:]
