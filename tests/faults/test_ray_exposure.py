"""The local Ray cluster of a pretrain stage refuses callers without its token (issue 25, item 11).

Its gRPC servers listen on every interface (Ray 2.60 binds them so whatever the node address), and the project ran
them with authentication off, so anyone on the network could attach while training ran. ``init_ray`` now starts a
local cluster with token authentication and a fresh random token only its process tree holds. Checked from outside,
with Ray's own CLI against the cluster's GCS: no token and a wrong token are refused, the right one is let in. Run in
a subprocess, so the token mode it sets stays out of this test process's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow  # one local Ray start (~20 s) and three `ray status` clients

PROBE = """
import os, subprocess, sys
os.environ.pop("RAY_AUTH_MODE", None)  # a user's shell: no Ray auth setting (the Makefile no longer disables it)
from ssl_tasks.training.ray_runner import init_ray
import ray
init_ray()
gcs = ray.get_runtime_context().gcs_address
token = os.environ["RAY_AUTH_TOKEN"]
assert os.environ["RAY_AUTH_MODE"] == "token" and len(token) == 64
ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
callers = [("none", {"RAY_AUTH_MODE": "disabled"}), ("wrong", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}),
           ("right", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})]
for label, auth in callers:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | auth
    res = subprocess.run([ray_cli, "status", "--address", gcs], capture_output=True, text=True, env=env, timeout=120)
    print(label, res.returncode, "InvalidAuthToken" in res.stdout + res.stderr, flush=True)
"""


def test_the_local_cluster_refuses_callers_without_its_token() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_MODE", None)  # the test session disables it (tests/conftest.py); a user's shell does not
    env.pop("RAY_ADDRESS", None)  # the local start-up, not the session's shared cluster
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=400)
    lines = [line for line in res.stdout.splitlines() if line.split(" ")[0] in ("none", "wrong", "right")]
    assert lines == ["none 1 True", "wrong 1 True", "right 0 False"], res.stdout[-2000:] + res.stderr[-3000:]
