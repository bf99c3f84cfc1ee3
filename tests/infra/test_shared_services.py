"""The shared team setup on loopback: PostgreSQL + SeaweedFS (S3) + an MLflow server with basic auth,
started by infra/local/services.sh. The default pipeline runs against them unchanged (only the env
file's variables differ), MLflow's REST API finds its runs, metrics and checkpoints (bytes in the S3
bucket, rows in PostgreSQL), and a DVC remote on the same store round-trips data and checkpoints into
a fresh clone. Deselect the slow ones with ``-m "not services"`` (the compose-file check stays)."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from helpers import REPO, copy_project, fast_params
from local_ray_cluster import LocalRayCluster

BIN = Path(sys.executable).parent
SCRIPT = REPO / "infra" / "local" / "services.sh"
INSTALL = REPO / "infra" / "local" / "install-services.sh"
COMPOSE = REPO / "infra" / "mlflow" / "docker-compose.yaml"
CLIENT_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL")


@dataclass
class Stack:
    state: Path
    env: dict[str, str]       # what `source STATE/env` exports (client side)
    secrets: dict[str, str]   # STATE/secrets.env (admin side)
    script_env: dict[str, str]

    @property
    def url(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def auth(self) -> tuple[str, str]:
        return self.env["MLFLOW_TRACKING_USERNAME"], self.env["MLFLOW_TRACKING_PASSWORD"]

    def api(self, method: str, path: str, **kw) -> requests.Response:
        r = requests.request(method, self.url + path, auth=self.auth, timeout=120, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        return r

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.env["S3_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            config=Config(s3={"addressing_style": "path"}))


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = line.removeprefix("export ").split("=", 1)
            out[k] = v
    return out


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(n: int) -> list[int]:
    """n loopback ports p with p and p+10000 free (SeaweedFS puts each gRPC port at +10000)."""
    rng, out = random.Random(), []
    while len(out) < n:
        p = rng.randrange(20000, 30000)
        if not {p, p + 10000} & {q for o in out for q in (o, o + 10000)} and _free(p) and _free(p + 10000):
            out.append(p)
    return out


def _stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    names = ("PG_PORT", "S3_PORT", "MLFLOW_PORT", "WEED_MASTER_PORT", "WEED_VOLUME_PORT", "WEED_FILER_PORT")
    env.update(zip(names, map(str, _ports(len(names)))))
    env.update(SERVICES_PYTHON=sys.executable, SERVICES_READY_TIMEOUT="180", WEED_STOP_WAIT="2",
               PATH=f"{BIN}:{env['PATH']}")
    return env


@pytest.fixture(scope="module")
def stack() -> Stack:
    subprocess.run(["bash", str(INSTALL)], check=True, timeout=900, env={**os.environ, "SERVICES_PYTHON": sys.executable})
    # Not under pytest's tmp root (mode 700): when run as root, PostgreSQL runs as the `postgres` user,
    # which must reach its data folder.
    state = Path(tempfile.mkdtemp(prefix="ssl-services-", dir="/tmp"))
    state.chmod(0o711)
    env = _stack_env()
    try:
        t0 = time.monotonic()
        res = subprocess.run(["bash", str(SCRIPT), "start", str(state)], check=False, env=env, capture_output=True, text=True,
                             timeout=600)
        print(f"services.sh start: {time.monotonic() - t0:.1f} s\n{res.stdout}")
        if res.returncode != 0:
            pytest.fail(f"services.sh start failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
        yield Stack(state, _read_env(state / "env"), _read_env(state / "secrets.env"), env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], check=False, env=env, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


def _dvc(root: Path, *args: str, env: dict[str, str], timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(BIN / "dvc"), *args], check=False, cwd=root, capture_output=True, text=True, env=env,
                         timeout=timeout)
    assert res.returncode == 0, f"dvc {' '.join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _client_env(stack: Stack) -> dict[str, str]:
    """The pipeline's environment on a team member's machine: theirs plus `source STATE/env`."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    return {**env, **stack.env, "PATH": f"{BIN}:{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def project(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pipeline (trimmed like tests/pipeline/test_dvc_pipeline.py) run once by `dvc repro`."""
    root = copy_project(tmp_path_factory.mktemp("shared") / "p")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(fast_params(raw, runs=("simclr",)), sort_keys=False))
    # on a Ray cluster the stage joins (the session's, else one of its own), as on a team's: its workers were not
    # started from this environment, so the MLflow credentials reach them only with the job (ray_runner.job_env)
    own = None if os.environ.get("RAY_ADDRESS") else LocalRayCluster(head_cpus=os.cpu_count() or 2)
    t0 = time.monotonic()
    try:
        res = _dvc(root, "repro", env={**_client_env(stack), "RAY_ADDRESS": own.address if own else
                                       os.environ["RAY_ADDRESS"]})
    finally:
        if own is not None:
            own.shutdown()
    print(f"dvc repro against the shared services: {time.monotonic() - t0:.1f} s")
    assert "Running stage 'compare'" in res.stdout
    assert "Connecting to existing Ray cluster" in res.stdout + res.stderr
    assert not (root / "mlflow").exists(), "the pipeline fell back to the local sqlite store"
    return root


def sha256_tree(root: Path, subdirs: tuple[str, ...]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in subdirs for p in sorted((root / d).rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.services
def test_authentication_is_required(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    search = f"{stack.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(f"{stack.url}/health", timeout=30).status_code == 200  # liveness stays open
    r = requests.get(search, params={"max_results": 5}, timeout=60)
    assert r.status_code == 401 and "Basic" in r.headers.get("WWW-Authenticate", "")
    assert requests.get(search, params={"max_results": 5}, auth=(stack.auth[0], "not-the-password-1"),
                        timeout=60).status_code == 401
    assert requests.get(search, params={"max_results": 5}, auth=stack.auth, timeout=60).status_code == 200
    # Artifact proxy and the UI's AJAX routes are behind the same wall.
    assert requests.get(f"{stack.url}/api/2.0/mlflow-artifacts/artifacts", timeout=60).status_code == 401
    assert requests.get(f"{stack.url}/ajax-api/2.0/mlflow/experiments/search", timeout=60).status_code == 401

    # The MLflow client: refused without credentials, logs a run with them.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for k in CLIENT_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(MlflowException, match="401|nauthorized|redentials"):
        MlflowClient(tracking_uri=stack.url).create_experiment("refused")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", stack.auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.auth[1])
    client = MlflowClient(tracking_uri=stack.url)
    exp = client.create_experiment("auth-probe")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "probe", 1.5)
    assert client.get_run(run.info.run_id).data.metrics == {"probe": 1.5}

    # The object store refuses anonymous and wrongly signed requests too.
    import boto3
    from botocore.exceptions import ClientError

    assert requests.get(f"{stack.env['S3_ENDPOINT_URL']}/{stack.script_env.get('S3_BUCKET_DVC', 'dvc')}/",
                        timeout=30).status_code == 403
    bad = boto3.client("s3", endpoint_url=stack.env["S3_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id=stack.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong-secret")
    with pytest.raises(ClientError):
        bad.list_objects_v2(Bucket="dvc")


@pytest.mark.services
def test_status_reports_all_services_up(stack: Stack) -> None:
    res = subprocess.run(["bash", str(SCRIPT), "status", str(stack.state)], check=False, env=stack.script_env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [line.split()[:2] for line in res.stdout.splitlines()] == [["postgres", "up"], ["s3", "up"],
                                                                       ["mlflow", "up"]]


@pytest.mark.services
def test_pipeline_runs_metrics_and_checkpoints_via_rest(stack: Stack, project: Path) -> None:
    exp = stack.api("GET", "/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": "ssl-tasks"}).json()["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:/")  # proxied by the server, not local files
    runs = stack.api("POST", "/api/2.0/mlflow/runs/search",
                     json={"experiment_ids": [exp["experiment_id"]], "max_results": 200}).json()["runs"]

    def tags(r: dict) -> dict[str, str]:
        return {t["key"]: t["value"] for t in r["data"].get("tags", [])}

    parents = [r for r in runs if tags(r).get("kind") == "pipeline"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    children = {r["info"]["run_name"]: r for r in runs
                if tags(r).get("mlflow.parentRunId") == parents[0]["info"]["run_id"]}
    assert {"simclr", "raw_pixels@digits", "supervised@digits"} <= set(children)
    simclr = children["simclr"]
    metrics = {m["key"]: m["value"] for m in simclr["data"]["metrics"]}
    for key in ("eval/knn/top1", "eval/linear/top1", "eval/semi_1pct/top1", "eval/semi_10pct/top1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "train/loss" in metrics  # logged per epoch by the Ray Train worker
    assert "eval_random_init/knn/top1" in metrics and "eval_margin/knn/top1" in metrics
    assert tags(simclr)["objective"] == "simclr" and tags(simclr)["git_commit"] != "unknown"
    run_id = simclr["info"]["run_id"]
    hist = stack.api("GET", "/api/2.0/mlflow/metrics/get-history",
                     params={"run_id": run_id, "metric_key": "train/loss"}).json()["metrics"]
    assert [m["step"] for m in hist] == [1]

    # The checkpoint: listed by the server, downloaded through it, identical to the local file.
    files = stack.api("GET", "/api/2.0/mlflow/artifacts/list",
                      params={"run_id": run_id, "path": "checkpoint"}).json()["files"]
    listed = {f["path"]: int(f.get("file_size", 0)) for f in files}
    assert {"checkpoint/encoder.pt", "checkpoint/meta.json"} <= set(listed)
    local = next(p.parent for p in (project / "artifacts" / "runs" / "simclr" / "pretrain").rglob("meta.json")
                 if json.loads(p.read_text())["mlflow_run_id"] == run_id)
    ckpt = (local / "encoder.pt").read_bytes()
    assert listed["checkpoint/encoder.pt"] == len(ckpt) > 1000
    got = stack.api("GET", "/get-artifact", params={"run_uuid": run_id, "path": "checkpoint/encoder.pt"}).content
    assert hashlib.sha256(got).digest() == hashlib.sha256(ckpt).digest()

    # ... and its bytes live in the S3 bucket, under the run.
    s3 = stack.s3()
    keys = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/")["Contents"]}
    key = next(k for k in keys if run_id in k and k.endswith("/checkpoint/encoder.pt"))
    assert hashlib.sha256(s3.get_object(Bucket="mlflow", Key=key)["Body"].read()).digest() == \
        hashlib.sha256(ckpt).digest()
    assert any(k.endswith("leaderboard/leaderboard.md") for k in keys)  # the parent run's artifacts
    # The env file's SSL_TASKS_STORAGE sent the pretrain stage's files through bucket ray, its checkpoints too
    assert s3.list_objects_v2(Bucket="ray", Prefix="ssl-tasks/trees/")["KeyCount"] > 0
    assert not list((project / "artifacts" / ".ray").glob("simclr-*/"))

    # The runs are rows in PostgreSQL (the backend store), not in a file next to the project.
    import psycopg

    port = int(stack.script_env["PG_PORT"])
    with psycopg.connect(host="127.0.0.1", port=port, user="mlflow", password=stack.secrets["PG_PASSWORD"],
                         dbname="mlflow") as conn:
        n = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = %s",
                         (int(exp["experiment_id"]),)).fetchone()[0]
    assert n == len(runs)


@pytest.mark.services
def test_dvc_push_then_pull_in_a_fresh_clone(stack: Stack, project: Path, tmp_path: Path) -> None:
    env = _client_env(stack)
    remote = f"s3://dvc/test-{os.getpid()}"
    _dvc(project, "remote", "add", "-d", "shared", remote, env=env)
    _dvc(project, "remote", "modify", "shared", "endpointurl", stack.env["S3_ENDPOINT_URL"], env=env)
    t0 = time.monotonic()
    _dvc(project, "push", env=env)
    t_push = time.monotonic() - t0
    git = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "add", "params.yaml", "dvc.lock", ".dvc/config"], ["git", "commit", "-qm", "pipeline results"]):
        subprocess.run(cmd, cwd=project, check=True, env=git, capture_output=True)
    assert "endpointurl" in (project / ".dvc" / "config").read_text()
    assert "secret" not in (project / ".dvc" / "config").read_text()  # credentials stay in the environment

    # What was pushed: every cached DVC output under data/ and artifacts/.
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        cached = [Path(o.fs_path).relative_to(project) for o in repo.index.outs if o.use_cache]
    assert any(p.parts[0] == "data" for p in cached) and any(p.parts[0] == "artifacts" for p in cached)
    s3 = stack.s3()
    prefix = remote.removeprefix("s3://dvc/") + "/"
    assert s3.list_objects_v2(Bucket="dvc", Prefix=prefix)["KeyCount"] > 0

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, env=git, capture_output=True)
    assert not (clone / "data").exists() and not (clone / "artifacts").exists()
    t0 = time.monotonic()
    _dvc(clone, "pull", env=env)
    t_pull = time.monotonic() - t0
    print(f"dvc push {t_push:.1f} s, fresh-clone dvc pull {t_pull:.1f} s")

    def tree(root: Path) -> dict[str, str]:
        out: dict[str, str] = {}
        for rel in cached:
            p = root / rel
            out.update(sha256_tree(root, (str(rel),)) if p.is_dir() else
                       {str(rel): hashlib.sha256(p.read_bytes()).hexdigest()})
        return out

    original, restored = tree(project), tree(clone)
    assert len(original) > 10
    assert restored == original  # every file, byte for byte
    status = subprocess.run([str(BIN / "dvc"), "status"], check=False, cwd=clone, capture_output=True, text=True,
                            env=env, timeout=300)
    print(f"dvc status in the fresh clone:\n{status.stdout[-2000:]}")


def test_compose_file_matches_the_local_stack() -> None:
    """Docker can't run here: check the compose file parses and starts the same three services the same way."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"postgres", "seaweedfs", "mlflow"} <= set(services)
    cmd = services["mlflow"]["command"]
    cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
    for flag in ("--app-name basic-auth", "--serve-artifacts", "--artifacts-destination s3://mlflow/artifacts",
                 "--backend-store-uri postgresql://mlflow@postgres:5432/mlflow"):
        assert flag in " ".join(cmd.split()), flag
    script = SCRIPT.read_text()
    for flag in ("--app-name basic-auth", "--serve-artifacts", '--artifacts-destination "s3://$S3_BUCKET_MLFLOW/artifacts"',
                 '--backend-store-uri "postgresql://mlflow@$PG_HOST:$PG_PORT/mlflow"'):
        assert flag in script, flag
    menv = services["mlflow"]["environment"]
    for key in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD",
                "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
        assert key in menv, key
    ini = configparser.ConfigParser()
    ini.read(COMPOSE.parent / "basic_auth.ini")
    assert ini["mlflow"]["database_uri"] == "postgresql://mlflow@postgres:5432/mlflow_auth"
    assert "mlflow_auth" in (COMPOSE.parent / "initdb.sql").read_text()
    assert "s3.bucket.create" in json.dumps(services["buckets"])


# ------------------------------------------------------------------ a Ray cluster with no shared filesystem

# Imported at start-up by every Python process of a cut-off node (its PYTHONPATH): an audit hook makes any open,
# listdir or scandir under the forbidden folders (the project: its data/, artifacts/, plug-ins) fail as if the path
# did not exist on this machine, and logs it. "armed" lines show the hook ran in the node's processes.
GUARD = '''
import os, sys
_ROOTS = tuple(p.rstrip("/") + "/" for p in os.environ.get("CUTOFF_FORBIDDEN", "").split(os.pathsep) if p)
_LOG = os.environ.get("CUTOFF_LOG", "")
def _note(line):
    with open(_LOG, "a") as f:
        f.write(line + "\\n")
def _hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0])) + "/"
        if path.startswith(_ROOTS):  # as on another machine: not there
            _note(f"absent {os.getpid()} {event} {path}")
            raise FileNotFoundError(2, "not on this node (the project's disk)", path)
if _ROOTS:
    sys.addaudithook(_hook)
    if _LOG:
        _note(f"armed {os.getpid()} {' '.join(sys.argv[:1])}")
'''


def _cutoff_node(cluster: LocalRayCluster, base: Path, forbidden: Path, name: str):
    """A node that behaves like another machine: its own HOME, working directory and store cache, and no access to
    ``forbidden`` (the project) from any of its Python processes."""
    home, guard = base / "home", base / "guard"
    for d in (home, guard):
        d.mkdir(parents=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    env = {"HOME": str(home), "SSL_TASKS_CACHE": str(home / ".cache" / "ssl-tasks"), "CUTOFF_LOG": str(base / "guard.log"),
           "CUTOFF_FORBIDDEN": str(forbidden), "PYTHONPATH": os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)}
    return cluster.add_node(num_cpus=1, resources={"node2": 1}, name=name, env=env, cwd=base)


@pytest.mark.services
@pytest.mark.ray_cluster
def test_a_node_cut_off_from_the_project_trains_from_the_store_and_resumes_after_being_killed(
        stack: Stack, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Issue 28's proof: checkpoints and the dataset travel through the S3 store (``SSL_TASKS_STORAGE``, set by
    the env file), a second node that cannot read the project's disk trains rank 1 from it, is SIGKILLed in epoch
    2, and its replacement (a fresh machine: empty cache) resumes the run from the epoch-1 checkpoint in S3."""
    root = copy_project(tmp_path_factory.mktemp("cutoff") / "p")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    paused = tmp_path / "paused"
    shutil.copy(REPO / "tests" / "fault_plugin.py", root / "fault_plugin.py")  # a project plug-in: travels too
    simclr = raw["runs"]["simclr"]
    raw.update(datasets={"digits": raw["datasets"]["digits"]}, plugins=["fault_plugin"],
               tracking={"experiment": "cut-off-node"})
    # worker 1 pauses in epoch 2 (2 workers x 64 of 1438 images: 11 steps per epoch); the node goes down instead
    raw["runs"] = {"simclr": {**simclr, "objective": "faulty_simclr", "encoder_kwargs": {"width": 8},
                              "objective_kwargs": {**simclr["objective_kwargs"], "fault_rank": 1,
                                                   "fault_after_steps": 11 + 2, "marker": str(paused),
                                                   "delay_s": 600, "kill": False}}}
    raw["train"].update(epochs=3, batch_size=64, warmup_epochs=0, num_workers=2)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prefix = f"cutoff-{os.getpid()}"
    env = {**_client_env(stack), "SSL_TASKS_STORAGE": f"s3://ray/{prefix}",
           "SSL_TASKS_CACHE": str(tmp_path / "head-cache")}
    assert _client_env(stack)["SSL_TASKS_STORAGE"] == "s3://ray/ssl-tasks"  # the env file sets the switch
    res = subprocess.run([str(BIN / "ssl-tasks"), "ingest", "--dataset", "digits"], check=False, cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    cluster = LocalRayCluster(head_cpus=1, env={"SSL_TASKS_CACHE": str(tmp_path / "head-cache")})
    s3, t0, phases = stack.s3(), time.monotonic(), {}
    proc = None
    try:
        victim = _cutoff_node(cluster, tmp_path / "node2", root, "node2")
        log = tmp_path / "pretrain.log"
        with open(log, "w") as f:
            proc = subprocess.Popen([str(BIN / "ssl-tasks"), "pretrain", "--run", "simclr"], cwd=root, stdout=f,
                                    stderr=subprocess.STDOUT, text=True, env={**env, "RAY_ADDRESS": cluster.address})
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, "the run never reached epoch 2\n" + log.read_text()[-4000:]
            time.sleep(0.2)
        phases["paused in epoch 2"] = time.monotonic() - t0

        def snapshots() -> list[str]:
            got = s3.list_objects_v2(Bucket="ray", Prefix=f"{prefix}/train/").get("Contents", [])
            return [o["Key"] for o in got if o["Key"].endswith("/checkpoint_manager_snapshot.json")]

        while not snapshots():  # the controller registered epoch 1's checkpoint, in the store
            assert time.monotonic() < deadline, "no checkpoint was registered in S3\n" + log.read_text()[-4000:]
            time.sleep(0.2)
        assert not list((root / "artifacts" / ".ray").glob("simclr-*/")), "Ray Train wrote to the project's disk"
        cluster.kill_node(victim)
        phases["node dead in GCS"] = time.monotonic() - t0
        _cutoff_node(cluster, tmp_path / "node2b", root, "node2-replacement")
        phases["replacement joined"] = time.monotonic() - t0
        proc.wait(timeout=420)
        phases["run finished"] = time.monotonic() - t0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        cluster.shutdown()
        print("phases (s since start):", {k: round(v, 1) for k, v in phases.items()})
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    assert "[simclr] resumed from checkpoint at epoch 1" in out
    history = json.loads((root / "artifacts" / "runs" / "simclr" / "pretrain" / "seed-0" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]

    # Both cut-off nodes ran guarded processes, refused nothing, and trained from their own copy of the store's files.
    for node in ("node2", "node2b"):
        guard = (tmp_path / node / "guard.log").read_text()
        assert "default_worker.py" in guard, guard[-2000:]  # the hook ran in the node's Ray workers
        # Ray puts the driver's working directory (the project) on its workers' sys.path, so imports and torch's
        # CUDA library search probe it and find nothing, as on another machine; nothing the job needs is read there
        misses = [line.split()[3] for line in guard.splitlines() if line.startswith("absent")]
        assert not [m for m in misses if m.startswith((f"{root}/data/", f"{root}/artifacts/",
                                                       f"{root}/fault_plugin.py", f"{root}/params.yaml"))], misses
        trees = [p for p in (tmp_path / node / "home" / ".cache" / "ssl-tasks" / "trees").iterdir()
                 if not p.name.startswith(".")]
        data = [t for t in trees if (t / "manifest.json").is_file()]
        assert len(data) == 1 and sha256_tree(data[0], (".",)) == {
            k.removeprefix("data/digits/"): v for k, v in sha256_tree(root, ("data/digits",)).items()}
        assert any((t / "fault_plugin.py").is_file() for t in trees)
    # Checkpoints lived in S3 only, and the finished run's storage was cleaned there.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ray", Prefix=f"{prefix}/").get("Contents", [])]
    assert any(k.startswith(f"{prefix}/files/") for k in keys) and not any("/train/simclr-" in k for k in keys)

    # MLflow: one run, every epoch logged once (the restarted group did not start a second run).
    exp = stack.api("GET", "/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": "cut-off-node"}).json()["experiment"]
    runs = stack.api("POST", "/api/2.0/mlflow/runs/search",
                     json={"experiment_ids": [exp["experiment_id"]], "max_results": 50}).json()["runs"]
    simclr_runs = [r for r in runs if r["info"]["run_name"] == "simclr"]
    assert len(simclr_runs) == 1 and simclr_runs[0]["info"]["status"] == "FINISHED", runs
    hist = stack.api("GET", "/api/2.0/mlflow/metrics/get-history",
                     params={"run_id": simclr_runs[0]["info"]["run_id"], "metric_key": "train/loss"}).json()["metrics"]
    assert sorted(m["step"] for m in hist) == [1, 2, 3]
