"""The fault matrix (issue 25): SIGKILL the pipeline inside each stage in turn, rerun ``dvc repro``, and compare.

One uninterrupted reference run and one faulted chain, both of a tiny profile (digits, SimCLR for 2 epochs, raw
pixels, k-NN and a linear probe). The chain kills ``dvc repro`` (its whole process group, and every process it left
behind) once inside each stage, in the DAG's own order: ingest, validate, tokenizer, baselines, pretrain (at its
first checkpoint and mid-epoch), evaluate, compare; each kill is followed by another ``dvc repro`` and the last one
runs to the end. Then: the leaderboard equals the reference's (seeded CPU runs are bit-identical), MLflow holds no
RUNNING run and no duplicate, and no temporary file or folder is left.

Cost, measured on 2026-12-07 on the 2-core dev machine while four other sessions ran: the reference run 305 s, the
whole test 627 s (the faulted chain costs about one more full run: each rerun skips the stages already done). Far
over the ~3 min aimed at; most of it is four local Ray start-ups (reference, two pretrain kills, the resume) at
60-90 s each on a loaded machine, and ~5 s of imports per stage process. Marked slow. Since issue 21 the reference
runs beside the chain (a thread; the second core) on the session's shared Ray cluster: one local start-up fewer and
the reference's time hidden behind the chain's (433 s -> 346 s measured back to back on the loaded machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, copy_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # two full runs; the default is 600 s a test

METRICS = ["name", "dataset", "kind", "collapsed", "diverged", "n_seeds", "knn/top1", "linear/top1",
           "knn/top1 margin", "linear/top1 margin", "reference"]


def tiny(root: Path) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["runs"] = {"simclr": raw["runs"]["simclr"]}
    raw["train"].update(epochs=2, warmup_epochs=0)
    raw["datasets"]["digits"]["baselines"] = ["raw_pixels"]
    raw["evaluation"]["protocols"] = ["knn", "linear"]
    raw["evaluation"]["settings"].update(linear_epochs=20)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _env(marker: str, shared_ray: bool = False) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           "SSL_TASKS_FAULT_MATRIX": marker}
    env.pop("MLFLOW_TRACKING_URI", None)
    if not (shared_ray and env.get("RAY_ADDRESS")):
        env.pop("RAY_AUTH_MODE", None)
        env.pop("RAY_ADDRESS", None)  # each stage starts its own local Ray, as `make run` does, and is killed with it
    return env


def _stragglers(marker: str) -> list[int]:
    """Processes (ours: they carry the marker in their environment) still alive after a kill."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if f"SSL_TASKS_FAULT_MATRIX={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    pids.append(int(pid))
            except OSError:
                continue
    return pids


def repro(root: Path, marker: str, shared_ray: bool = False) -> subprocess.CompletedProcess[str]:
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc), "repro"], cwd=root, capture_output=True, text=True,
                          env=_env(marker, shared_ray), timeout=1500)


def repro_killed(root: Path, marker: str, stage: str, ready: Callable[[Path, str], bool]) -> str:
    """``dvc repro`` until ``stage`` runs and ``ready(root, output so far)``; then SIGKILL it all. Its output."""
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.Popen([str(dvc), "repro"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(marker), start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        out = "".join(lines)
        if f"Running stage '{stage}'" in out and ready(root, out.split(f"Running stage '{stage}'", 1)[1]):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"dvc repro ended before the kill inside {stage}:\n" + "".join(lines)[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in _stragglers(marker):  # e.g. Ray's own processes, in sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reader.join(timeout=10)
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").is_file() else {}
    assert stage not in _locked(lock), f"{stage} had finished before the kill"
    return "".join(lines)


def _locked(lock: dict) -> set[str]:
    names = set()
    for name, body in (lock.get("stages") or {}).items():
        if isinstance(body, dict) and "cmd" not in body:  # foreach: name -> {key: stage}
            names |= {f"{name}@{k}" for k in body}
        else:
            names.add(name)
    return names


def said(text: str) -> Callable[[Path, str], bool]:
    return lambda root, out: text in out


def has(pattern: str) -> Callable[[Path, str], bool]:
    return lambda root, out: any(root.glob(pattern))


def running_parent(root: Path, out: str) -> bool:
    """The compare stage has created its MLflow parent run (and not finished it)."""
    import sqlite3

    db = root / "mlflow" / "mlflow.db"
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            rows = con.execute("select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                               "where t.key = 'kind' and t.value = 'pipeline'").fetchall()
    except sqlite3.Error:
        return False
    return any(s == "RUNNING" for (s,) in rows)


KILLS: list[tuple[str, str, Callable[[Path, str], bool]]] = [
    ("ingest", "ingest@digits", said("ingest digits: source=")),
    ("validate", "validate@digits", said("validate digits: running")),
    ("tokenizer", "tokenizer@digits", said("tokenizer digits: k-means")),
    ("baselines", "baselines@digits", said("raw_pixels@digits: knn")),
    ("pretrain, first checkpoint", "pretrain@simclr", has("artifacts/.ray/simclr-*/checkpoint_*")),
    ("pretrain, mid-epoch", "pretrain@simclr", said("[simclr] epoch ")),
    ("evaluate", "evaluate@simclr", said("evaluate simclr: knn")),
    ("compare", "compare", running_parent),
]


def _board(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / "artifacts" / "leaderboard.csv")
    return df[[c for c in METRICS if c in df.columns]].sort_values("name").reset_index(drop=True)


def _leftovers(root: Path) -> list[str]:
    found = [str(p.relative_to(root)) for p in root.rglob("*") if ".git" not in p.parts and ".dvc" not in p.parts
             and (p.name.endswith(".tmp") or ".old-" in p.name)]
    ray = root / "artifacts" / ".ray"
    found += [str(p.relative_to(root)) for p in ray.iterdir()] if ray.is_dir() else []
    return found


def test_sigkill_in_every_stage_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    t0 = time.monotonic()
    marker = uuid.uuid4().hex
    ref = copy_project(tmp_path / "ref")
    tiny(ref)
    # The uninterrupted reference runs beside the faulted chain, on the second core: its own marker (the chain's
    # kills never reach it) and the session's shared Ray cluster when there is one (its seeded CPU results do not
    # depend on which cluster runs them; the chain's stages keep starting their own local Ray, killed with them).
    reference: dict[str, object] = {}

    def run_reference() -> None:
        reference["done"] = repro(ref, uuid.uuid4().hex, shared_ray=True)
        reference["seconds"] = time.monotonic() - t0

    ref_thread = threading.Thread(target=run_reference, daemon=True)
    ref_thread.start()

    root = copy_project(tmp_path / "faulted")
    tiny(root)
    for label, stage, ready in KILLS:  # in the DAG's order (checked against the reference's below)
        repro_killed(root, marker, stage, ready)
    last = repro(root, marker)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    ref_thread.join(timeout=1500)
    done = reference.get("done")
    assert isinstance(done, subprocess.CompletedProcess), "the reference run did not end within 1500 s"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    order = [line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage '")]
    assert sorted(KILLS, key=lambda k: order.index(k[1])) == KILLS, order  # each kill inside the stage it names
    print(f"fault matrix: reference run {reference['seconds']:.0f} s (beside the chain), whole test "
          f"{time.monotonic() - t0:.0f} s, {len(KILLS)} kills: {', '.join(k[0] for k in KILLS)}")

    pd.testing.assert_frame_equal(_board(root), _board(ref))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    all_runs = client.search_runs([exp.experiment_id], run_view_type=3)  # active and deleted
    assert [r.info.run_name for r in all_runs if r.info.status == "RUNNING"] == []
    finished = [r for r in all_runs if r.info.status == "FINISHED"]
    per_name = pd.Series([(r.info.run_name, r.data.tags.get("kind")) for r in finished]).value_counts()
    assert per_name.max() == 1, per_name  # one pretrain run, one baseline run, one pipeline parent
    newest = max((r for r in finished if r.data.tags.get("kind") == "pipeline"), key=lambda r: r.info.start_time)
    kids = {r.info.run_name for r in all_runs if r.data.tags.get("mlflow.parentRunId") == newest.info.run_id}
    assert kids == {"simclr", "raw_pixels@digits"}, kids
    assert _leftovers(root) == []
    assert _stragglers(marker) == []
