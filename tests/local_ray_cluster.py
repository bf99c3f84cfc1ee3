"""A real multi-node Ray cluster on this machine, for tests and benchmarks (``ray start --head`` + ``ray start
--address``).

Each node is one ``ray start --block`` process in its own session; its raylet, agents and workers are that
process's descendants, so a node is stopped (or killed, to simulate losing the machine) by pid. ``ray stop``
is never used: it kills every Ray process on the machine, other users' local clusters included, and clears
the default ``/tmp/ray/ray_current_cluster``. Every port is picked free and the cluster has its own temp
dir, so it neither collides with nor is auto-discovered by another Ray instance on the same machine. If the
process that started the cluster dies, each ``ray start`` gets SIGTERM (Linux parent-death signal) and stops
its node, so a killed test run leaves no cluster behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
         "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0"}
# the GCS marks a node dead after 3 missed 1 s health checks (default: 5 missed 3 s checks, ~30 s on a loaded machine)
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
                   "RAY_health_check_failure_threshold": "3"}
OBJECT_STORE_BYTES = 200 * 1024 * 1024


_TAKEN: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports, none handed out before in this process (sockets held until all are
    picked, so the kernel cannot return one twice)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("", 0))
            port = s.getsockname()[1]
            if port not in _TAKEN:
                _TAKEN.add(port)
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Node:
    """One ``ray start --block`` process and everything it spawned."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log
        self.node_id = ""  # set once the GCS lists the node
        self._seen: dict[int, float] = {}  # pid -> create_time, so a reused pid is never signalled
        self.remember()

    def remember(self) -> None:
        """Record the node's current process tree (processes can outlive a killed parent)."""
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self._seen.setdefault(p.pid, p.create_time())
        except psutil.NoSuchProcess:
            pass

    def processes(self) -> list[psutil.Process]:
        self.remember()
        out = []
        for pid, created in self._seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def kill(self) -> None:
        """SIGKILL the whole node at once: what losing the machine (or its pod) looks like to the cluster."""
        _signal(self.processes(), signal.SIGKILL)
        self._reap(5)

    def stop(self, grace_s: float = 5) -> None:
        """Stop this node only, in ``ray stop``'s order: SIGTERM the raylet (it stops its workers and agents and
        unregisters the node), then the ``ray start --block`` process (the GCS and dashboard on the head),
        SIGKILL whatever is still alive after ``grace_s`` each."""
        procs = self.processes()
        raylets = [p for p in procs if _name(p) == "raylet"]
        _signal(raylets, signal.SIGTERM)
        _wait_gone(raylets, grace_s)
        root = [p for p in self.processes() if p.pid == self.proc.pid]
        _signal(root, signal.SIGTERM)
        _wait_gone(self.processes(), grace_s)
        _signal(self.processes(), signal.SIGKILL)
        self._reap(5)

    def _reap(self, timeout: float) -> None:
        _wait_gone(self.processes(), timeout)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


class LocalRayCluster:
    """``head_cpus`` on the head node, then ``add_node()`` for each further node, all on this machine.

    Ray turns loopback addresses into the machine's own IP (``resolve_ip_for_localhost``), so every node reports
    the same IP: tell them apart by node id. The dashboard (state API) listens on 127.0.0.1 only.
    """

    def __init__(self, head_cpus: int = 1, *, env: dict[str, str] | None = None, start_timeout_s: float = 90) -> None:
        # short: Ray's unix sockets live under it and must fit in 107 characters. The temp dir is <root>/ray, so
        # only a process with RAY_TMPDIR=<root> could discover the cluster (its ray_current_cluster file) the
        # way plain ray.init() finds a `ray start` cluster in /tmp/ray; nothing else on the machine does.
        self.root = Path(tempfile.mkdtemp(prefix="rayn-", dir="/tmp"))
        self.temp_dir = self.root / "ray"
        self.temp_dir.mkdir()
        self.env = {**os.environ, **QUIET, **FAST_NODE_DEATH, **(env or {}),
                    "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_TMPDIR", None)
        self.start_timeout_s = start_timeout_s
        self.gcs_port, self.dashboard_port, client_port = free_ports(3)
        self.address = f"127.0.0.1:{self.gcs_port}"
        # every Ray process of the cluster (its workers too) gets the cluster's address: Ray Train's placement-group
        # cleaner looks its controller up through the state API with no address, which resolves RAY_ADDRESS and
        # otherwise fails ("Found multiple active Ray instances") while another Ray runs on this machine
        self.env["RAY_ADDRESS"] = self.address
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[Node] = []
        try:
            self.head = self._start("head", ["--head", "--port", str(self.gcs_port), "--include-dashboard", "true",
                                             "--dashboard-host", "127.0.0.1", "--dashboard-port",
                                             str(self.dashboard_port), "--ray-client-server-port", str(client_port)],
                                    head_cpus, None)
        except BaseException:
            self.shutdown()
            raise

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None, name: str = "", *,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> Node:
        """A further node; ``env`` (merged over the cluster's) and ``cwd`` make it a different machine's node: its
        own HOME, caches, working directory (tests/infra/test_shared_services.py cuts one off the project's disk)."""
        # one log monitor (the head's) tails the shared session logs; a second would print every worker line twice
        return self._start(name or f"node{len(self.nodes)}", ["--address", self.address, "--include-log-monitor",
                                                               "false"], num_cpus, resources, env, cwd)

    def _start(self, name: str, args: list[str], num_cpus: int, resources: dict[str, float] | None,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> Node:
        before = self.alive_node_ids() if self.nodes else set()
        cmd = [str(BIN / "ray"), "start", *args, "--block", "--num-cpus", str(num_cpus), "--num-gpus", "0",
               "--temp-dir", str(self.temp_dir), "--object-store-memory", str(OBJECT_STORE_BYTES),
               "--disable-usage-stats"]
        # every port explicit and distinct: Ray's fixed defaults (e.g. the agent's 52365) would collide between
        # the nodes of this cluster and with any other Ray instance on the machine
        for flag, port in zip(("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                               "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                               "--runtime-env-agent-port"), free_ports(6)):
            cmd += [flag, str(port)]
        if resources:
            cmd += ["--resources", json.dumps(resources)]
        log = self.temp_dir / f"{name}-{len(self.nodes)}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(_with_parent_death_signal(cmd), stdout=f, stderr=subprocess.STDOUT,
                                    env={**self.env, **(env or {})}, cwd=cwd, start_new_session=True)
        node = Node(name, proc, log)
        self.nodes.append(node)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            node.remember()
            ids = set()
            if _listening(self.gcs_port):  # else the GCS client would block for 30 s waiting for it
                with contextlib.suppress(Exception):  # the GCS is still starting
                    ids = self.alive_node_ids()
            # the head is ready once `ray start` has also recorded the cluster (its last start-up step)
            if ids - before and (before or (self.temp_dir / "ray_current_cluster").is_file()):
                node.node_id = next(iter(ids - before))
                return node
            time.sleep(0.5)
        raise TimeoutError(f"ray start ({name}) did not register within {self.start_timeout_s} s:\n"
                           f"{log.read_text()[-3000:]}")

    def kill_node(self, node: Node, timeout_s: float = 60) -> None:
        """SIGKILL every process of ``node`` (a lost machine or pod) and wait until the GCS has declared it dead."""
        node.kill()
        deadline = time.monotonic() + timeout_s
        while node.node_id in self.alive_node_ids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the GCS never marked the killed node {node.name} dead")
            time.sleep(0.5)

    def alive_node_ids(self) -> set[str]:
        """Node ids the GCS reports alive (asked in a subprocess-free way: the GCS client, no ray.init)."""
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        nodes = GcsClient(address=self.address).get_all_node_info(
            timeout=5, state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
        return {info.node_id.hex() for info in nodes.values()}

    def shutdown(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head (GCS) last
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    """``cmd`` run through a tiny Python shim that asks Linux for SIGTERM when the process that started it dies
    (``PR_SET_PDEATHSIG``, kept across exec), then execs ``cmd``; a plain ``preexec_fn`` is unsafe with threads."""
    if not sys.platform.startswith("linux"):
        return cmd
    shim = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", shim, *cmd]


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return ""


def _signal(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until every process has exited (a zombie, not yet reaped by its parent, counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return
        procs = alive
        time.sleep(0.1)
