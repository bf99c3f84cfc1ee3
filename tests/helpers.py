"""Test helpers importable from any test module (pytest's ``pythonpath`` includes tests/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_project(dest: Path) -> Path:
    """A throwaway copy of the project's source files (what git would check out), as a git + DVC repo."""
    import shutil

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        src = REPO / f
        if f == "dvc.lock" or not src.is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def fast_params(raw: dict, runs: tuple[str, ...] = ("simclr", "byol")) -> dict:
    """Shrink the default params so the whole DAG runs in about a minute per run on 2 cores."""
    raw["runs"] = {k: v for k, v in raw["runs"].items() if k in runs}
    raw["train"].update(epochs=1, batch_size=128, warmup_epochs=0)
    raw["baselines"].update(supervised_epochs=1)
    raw["evaluation"]["settings"].update(finetune_epochs=2, linear_epochs=20)
    return raw


def repro(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dvc repro [args]`` in ``root`` with this venv's tools first on PATH and the project's own MLflow store
    (any inherited ``MLFLOW_TRACKING_URI`` dropped unless ``env`` sets one)."""
    import sys

    bin_dir = Path(sys.executable).parent
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    full.pop("MLFLOW_TRACKING_URI", None)
    full.update(env or {})
    return subprocess.run([str(bin_dir / "dvc"), "repro", *args], cwd=root, capture_output=True, text=True, env=full,
                          timeout=1500)


def ran_stages(stdout: str) -> set[str]:
    """The stages a ``dvc repro`` ran, from its output."""
    import re

    return set(re.findall(r"Running stage '([^']+)'", stdout))


def noop_repro(res: subprocess.CompletedProcess[str]) -> bool:
    """A ``dvc repro`` that found nothing to do: it ran only ``lineage``, which hashes the files params name on
    every repro (``always_changed``) and reruns nothing when they have not changed."""
    return res.returncode == 0 and ran_stages(res.stdout) == {"lineage"}


def validation_failure(ds: Path, tmp_path: Path, **kw: object) -> tuple[str, dict[str, dict]]:
    """Validate ``ds`` expecting failure: the message and the failed expectations by name (report and exception
    agree)."""
    import json

    import pytest

    from ssl_tasks.validation import ValidationFailed, validate_dataset

    report_path = tmp_path / "report.json"
    with pytest.raises(ValidationFailed) as ei:
        validate_dataset(ds, report_path, **kw)
    report = json.loads(report_path.read_text())
    assert report == ei.value.report and report["success"] is False
    msg = str(ei.value)
    assert msg.startswith(f"validation failed for {ds}: {report['n_failed']} of {report['n_expectations']}")
    return msg, {e["name"]: e for e in report["expectations"] if not e["success"]}


SHARED_DATA = REPO.parent / "shared" / "data"


def needs_shared(path: Path, what: str):  # noqa: ANN201
    """Mark a test that reads ``../shared/data``: it fails with a readable message when the data is missing
    (these are core tests, so a missing dataset must turn CI red, not skip them)."""
    import functools

    def deco(fn):  # noqa: ANN001, ANN202
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            assert path.exists(), f"{what} is missing at {path}: the tests read the shared datasets beside the repo"
            return fn(*args, **kwargs)

        return wrapper

    return deco


def plugin_objective_config(module: str, objective: str, kwargs: dict) -> object:
    """The typed config of a test plug-in's objective, built as a driver builds any (the plug-in imported first);
    then the plug-in is forgotten again, so the test process's objective registry stays the built-in one (what the
    objective contract tests iterate). Ray workers import the plug-in themselves (``job_from_dict``)."""
    import sys

    from ssl_tasks.core.plugins import load_plugins
    from ssl_tasks.objectives import OBJECTIVES
    from ssl_tasks.training.config import objective_config

    load_plugins((module,), str(REPO / "tests"))
    try:
        return objective_config(objective, kwargs)
    finally:
        OBJECTIVES._items.pop(objective, None)
        sys.modules.pop(module, None)
