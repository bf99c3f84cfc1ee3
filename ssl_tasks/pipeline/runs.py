"""The MLflow run lifecycle of the stages: provenance tags, a pretraining run that resumes into the same MLflow run
after a crash, baseline runs, and the parent run that adopts them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from ssl_tasks.core.config import to_dict
from ssl_tasks.core.io import write_json_atomic
from ssl_tasks.tracking import mlflow_tracking as mt

# Rewritten by every successful `dvc repro` (run-specific hashes): a results file, not a change to the code or params.
NOT_DIRTY = (":(top,exclude,glob)**/dvc.lock",)


def git_state(root: Path) -> tuple[str, bool]:
    """(HEAD's hash, whether tracked files differ from it): ``("unknown", False)`` outside a git checkout. An edited
    params.yaml or source file makes it dirty; dvc.lock (rewritten by the pipeline itself) and untracked files do
    not."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown", False
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *NOT_DIRTY],
                                cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return head.stdout.strip(), bool(status.stdout.strip())


def git_tags(root: Path) -> dict[str, str]:
    """The code version a run was made from, as MLflow tags: ``git_commit`` and ``git_dirty`` ("true"/"false")."""
    commit, dirty = git_state(root)
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def data_hash(data_dir: Path) -> str:
    """sha256 of the manifest, which holds every shard's sha256: the dataset's version."""
    return hashlib.sha256((Path(data_dir) / "manifest.json").read_bytes()).hexdigest()


def tracking(params: Any, root: Path) -> tuple[str, str]:
    """(tracking URI, experiment id) of the project at ``root``."""
    uri = mt.tracking_uri(root)
    return uri, mt.ensure_experiment(uri, params.tracking.experiment)


def resume_or_start(uri: str, exp: str, marker: Path, name: str, run_params: dict[str, Any],
                    tags: dict[str, str]) -> str:
    """The MLflow run of an interrupted attempt at the same job (its id kept in ``marker``), else a new one."""
    if marker.is_file():
        run_id = json.loads(marker.read_text())["run_id"]
        if mt.run_exists(uri, run_id):
            mt.set_tags(uri, run_id, {mt.OWNER_TAG: mt.owner()})  # this process keeps it open now
            if mt.status(uri, run_id) != "RUNNING":  # closed as orphaned meanwhile (close_orphans)
                mt.reopen(uri, run_id)
            return run_id
    run_id = mt.start_run(uri, exp, name, run_params, tags)
    write_json_atomic(marker, {"run_id": run_id})
    return run_id


def pretrain_run(uri: str, exp: str, marker: Path, run: str, seed: int, spec: Any, modality: str, train: Any,
                 root: Path, data_dir: Path) -> str:
    tags = {"objective": spec.objective, "dataset": spec.dataset, "encoder": spec.encoder, "modality": modality,
            "kind": "ssl", "seed": str(seed), **git_tags(root), "data_hash": data_hash(data_dir)}
    p = {"run": run, "seed": seed, "objective": spec.objective, "encoder": spec.encoder,
         "encoder_kwargs": spec.encoder_kwargs, "objective_kwargs": spec.objective_kwargs, "train": to_dict(train),
         "dataset": spec.dataset}
    return resume_or_start(uri, exp, marker, run, p, tags)


def baseline_run(uri: str, exp: str, name: str, kind: str, dataset: str, modality: str, encoder: str,
                 encoder_kwargs: dict[str, Any], seed: int, root: Path, data_dir: Path,
                 metrics: dict[str, float], started: float | None = None) -> str:
    """A finished MLflow run holding one baseline's evaluation metrics; ``started`` (``time.time()`` when the
    baseline's work began) makes its duration the real one."""
    tags = {"kind": "baseline", "baseline": kind, "dataset": dataset, "encoder": encoder, "modality": modality,
            **git_tags(root), "data_hash": data_hash(data_dir)}
    run_id = mt.start_run(uri, exp, name, {"baseline": kind, "encoder": encoder, "seed": seed,
                                           "encoder_kwargs": encoder_kwargs}, tags, started=started)
    mt.log_metrics(uri, run_id, {f"eval/{k}": v for k, v in metrics.items()})
    mt.finish(uri, run_id)
    return run_id


def close_orphans(uri: str, exp: str) -> list[str]:
    """Mark KILLED every RUNNING run of ``exp`` whose owning process, on this machine, is gone (a stage killed by
    SIGKILL or a power cut never ends its run); return their ids. Runs of live processes and of other machines
    are left alone; a killed pretrain that is resumed later reopens its run (``resume_or_start``)."""
    import socket

    from ssl_tasks.core.io import pid_alive

    closed = []
    for rid, who in mt.running_runs(uri, exp):
        host, _, pid = who.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            mt.finish(uri, rid, "KILLED")
            closed.append(rid)
    return closed


def adopt(uri: str, parent: str, children: list[str]) -> list[str]:
    """Make ``parent`` the parent of every child run that exists and has none, or whose parent was killed or
    failed (a compare stage that died midway); return the adopted ids."""
    adopted = []
    for rid in children:
        if not mt.run_exists(uri, rid):
            continue
        old = mt.parent_of(uri, rid)
        if old is None or mt.status(uri, old) in ("KILLED", "FAILED"):
            mt.set_tags(uri, rid, {"mlflow.parentRunId": parent})
            adopted.append(rid)
    return adopted
