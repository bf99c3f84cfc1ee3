"""Workspaces: where a run with parameters works, a refreshed copy of the project's source files.

A workspace ``<root>/workspaces/<name>/`` holds the project's source files, its own params.yaml
and dvc.lock, DVC without git on the project's DVC cache, and ``.flow/`` (the parameters, the
list of copied files, the lock that keeps it to one run at a time).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ssl_tasks.orchestration.dvc_runner import cache_dir, init_without_git

WORKSPACES_DIR = "workspaces"
FLOW_DIR = ".flow"  # inside a workspace: the flow parameters, the list of copied source files, the lock

# Copied when git is unavailable (or the root is no git repository).
FALLBACK_SOURCES = ("ssl_tasks", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore")
# Never copied into a workspace: it keeps its own lineage, DVC state and params.
SKIP_FILES = {"dvc.lock", "params.yaml", ".dvc/config.local"}
SKIP_PREFIXES = (f"{WORKSPACES_DIR}/", ".dvc/cache/", ".dvc/tmp/", ".git/", ".venv/", f"{FLOW_DIR}/")
SKIP_PARTS = {"__pycache__"}

RunIds = Callable[[], tuple[str, str]]  # () -> (run name, run id) of the run that needs a new workspace


def new_run_ids() -> tuple[str, str]:
    """A run name and id for a run that has none of its own: ``run-<time>`` and a random hex id."""
    return time.strftime("run-%Y%m%d-%H%M%S"), uuid.uuid4().hex


def resolve_workspace(root: Path, workspace: str | None, has_params: bool,
                      run_ids: RunIds = new_run_ids) -> Path | None:
    """None: run in the project root. Else the workspace directory to use.

    ``workspace`` None without parameters: the root; None, "" or "new": a new workspace
    ``<root>/workspaces/<name>-<id8>`` from ``run_ids()``; a name: under ``<root>/workspaces/``;
    an absolute path: itself. Parameters never apply to the root's own params.yaml (ValueError).
    """
    if workspace is None and not has_params:
        return None
    if workspace in (None, "", "new"):
        name, rid = run_ids()
        return root / WORKSPACES_DIR / f"{name}-{str(rid).replace('-', '')[:8]}"
    path = Path(workspace).expanduser()
    path = path if path.is_absolute() else root / WORKSPACES_DIR / path
    path = path.resolve()
    if path == root:
        if has_params:
            raise ValueError("parameters are applied in a workspace, never to the project's own params.yaml: "
                             "leave workspace empty (or 'new') or name another directory")
        return None
    return path


@contextlib.contextmanager
def workspace_lock(ws: Path | None) -> Iterator[None]:
    """One flow run per workspace at a time (the project root is guarded by DVC's own repo lock)."""
    if ws is None:
        yield
        return
    (ws / FLOW_DIR).mkdir(parents=True, exist_ok=True)
    with open(ws / FLOW_DIR / "lock", "w") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: DVC's repo lock still stops a second `dvc repro`
            yield
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"workspace {ws} is in use by another flow run; use another workspace") from None
        yield


def source_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files (``git ls-files -co --exclude-standard``), minus SKIP_*."""
    files: list[str] | None = None
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                             capture_output=True, check=True, timeout=120)
        files = [f for f in out.stdout.decode("utf-8", "surrogateescape").split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = None
    if files is None:
        files = []
        for name in FALLBACK_SOURCES:
            path = root / name
            if path.is_dir():
                files += [str(f.relative_to(root)) for f in sorted(path.rglob("*")) if f.is_file()]
            elif path.is_file():
                files.append(name)
    keep = []
    for f in files:
        f = f.replace(os.sep, "/")
        if f in SKIP_FILES or f.startswith(SKIP_PREFIXES) or SKIP_PARTS & set(f.split("/")) or f.endswith(".pyc"):
            continue
        if (root / f).is_file():
            keep.append(f)
    return sorted(set(keep))


def prepare_workspace(root: Path, ws: Path, params: dict[str, Any] | None, flow_parameters: dict[str, Any],
                      log: Callable[[str], None]) -> Path:
    """Create or refresh the workspace ``ws``: source files, params.yaml, DVC without git + shared cache.

    ``params``: the params.yaml to write (with ``flow_parameters`` in its header and in
    ``.flow/parameters.json``); None keeps the workspace's own (a new one gets the root's).
    Files copied last time that the project no longer has are removed.
    """
    new = not (ws / "dvc.yaml").exists()
    ws.mkdir(parents=True, exist_ok=True)
    meta = ws / FLOW_DIR
    meta.mkdir(exist_ok=True)
    files = source_files(root)
    listing = meta / "sources.txt"
    if listing.is_file():
        for old in set(listing.read_text().splitlines()) - set(files):
            (ws / old).unlink(missing_ok=True)
    for f in files:
        dst = ws / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, dst)
    listing.write_text("\n".join(files) + "\n")
    if params is not None:
        header = (f"# Written by the ssl-pipeline flow: {root / 'params.yaml'} with the flow parameters\n"
                  f"# {json.dumps(flow_parameters, default=str)}\n")
        (ws / "params.yaml").write_text(header + yaml.safe_dump(params, sort_keys=False, default_flow_style=None))
        (meta / "parameters.json").write_text(json.dumps(flow_parameters, indent=2, default=str) + "\n")
    elif new or not (ws / "params.yaml").is_file():
        shutil.copy2(root / "params.yaml", ws / "params.yaml")
    cache = cache_dir(root)
    init_without_git(ws, cache)
    log(f"{'created' if new else 'refreshed'} workspace {ws} ({len(files)} source files; DVC cache {cache})")
    return ws
