"""Prefect flow ``ssl-pipeline``: the stages of ``dvc.yaml``, run by DVC itself, one task per stage.

One DAG, one implementation: the stage list comes from DVC's own graph of the run directory
(the order ``dvc repro`` uses) and every task runs ``dvc repro --single-item <stage>``, so a
flow run leaves exactly the lineage ``dvc repro`` leaves (dvc.lock, DVC cache, MLflow runs)
and unchanged stages are skipped by DVC.

Where it runs:

- no parameters: in the project root (same dvc.lock and outputs as ``dvc repro`` there);
- any of ``dataset``, ``objectives``, ``epochs``, ``num_workers``, ``overrides`` (or
  ``workspace="new"``): in its own workspace ``<root>/workspaces/<flow-run-name>-<id8>/``,
  a copy of the project's source files with the parameters applied to its params.yaml
  (as ``dvc exp run -S`` would), DVC without git, the project's DVC cache (so its run cache
  too) and the project's MLflow store, so every run shows in one MLflow UI;
- ``workspace="<name>"`` (under ``<root>/workspaces/``) or an absolute path: that workspace,
  created if missing; an existing one gets the current source files and, when parameters
  are given, a params.yaml rebuilt from the project's params.yaml plus these parameters
  (no parameters: its own params.yaml is kept). Re-running it with the same settings
  re-runs nothing.

Two flow runs started at once therefore work in different directories; a second run on a
workspace in use fails at once (a lock in ``<workspace>/.flow/``), and in the project root
DVC's repo lock stops a second ``dvc repro``.
Run it: ``python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(epochs=1)"``,
or serve it (``python -m flows.deploy``) and start runs from the Prefect UI.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKSPACES_DIR = "workspaces"
FLOW_DIR = ".flow"  # inside a workspace: the flow parameters and the list of copied source files

# Copied when git is unavailable (or the root is no git repository).
FALLBACK_SOURCES = ("ssl_tasks", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore")
# Never copied into a workspace: it keeps its own lineage, DVC state and params.
SKIP_FILES = {"dvc.lock", "params.yaml", ".dvc/config.local"}
SKIP_PREFIXES = (f"{WORKSPACES_DIR}/", ".dvc/cache/", ".dvc/tmp/", ".git/", ".venv/", f"{FLOW_DIR}/")
SKIP_PARTS = {"__pycache__"}

# Stages whose tasks retry once (they read external sources: I/O).
RETRY_STAGES = {"ingest": 1}

# Task-run tags: every pretrain stage gets PRETRAIN_TAG, and GPU_TAG as well when its run trains on
# a GPU (``train.use_gpu``, or the run's own ``train`` override). A Prefect tag concurrency limit
# on GPU_TAG (``prefect concurrency-limit create gpu 1``) then lets only that many GPU pretraining
# tasks run at once across all flow runs; the others wait for a slot. CPU runs never take a slot.
PRETRAIN_TAG = "pretrain"
GPU_TAG = "gpu"

QUIET_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "PYTHONUNBUFFERED": "1",
}

_ERROR_LINE = re.compile(r"^\s*(error:|ERROR:)|^\w+(Error|Exception): ")
_STATUS = (("didn't change, skipping", "unchanged"), ("is cached - skipping run", "restored"),
           ("Running stage", "ran"))


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message holds its last error lines."""


# ----------------------------------------------------------------------------- parameters


def apply_parameters(raw: dict[str, Any], *, dataset: str | None = None, objectives: list[str] | None = None,
                     epochs: int | None = None, num_workers: int | None = None,
                     overrides: dict[str, Any] | None = None, warn: Any = None) -> dict[str, Any]:
    """Return a copy of the params.yaml mapping ``raw`` with the flow parameters applied.

    - ``objectives``: keep only these run names (from ``runs``);
    - ``dataset``: keep the runs on it (with ``objectives``, or when no run uses it: point the
      kept runs at it); either way datasets no kept run uses are dropped;
    - ``epochs`` / ``num_workers``: ``train.epochs`` / ``train.num_workers`` (and any per-run
      ``train`` override of them);
    - ``overrides``: dotted keys -> values (``{"baselines.supervised_epochs": 2}``), applied last,
      like ``dvc exp run -S``; unknown top-level keys are rejected. Keys under a run or dataset
      that ``objectives`` / ``dataset`` dropped are skipped.
    Raises ValueError naming the valid choices.
    """
    p = copy.deepcopy(raw)
    runs: dict[str, Any] = dict(p.get("runs") or {})
    datasets: dict[str, Any] = dict(p.get("datasets") or {})
    dropped: set[tuple[str, str]] = set()
    if objectives is not None:
        if isinstance(objectives, str):
            objectives = [objectives]
        unknown = [o for o in objectives if o not in runs]
        if unknown or not objectives:
            raise ValueError(f"unknown run name(s) in objectives: {', '.join(map(repr, unknown)) or '(empty list)'}; "
                             f"valid run names: {', '.join(runs) or '(none)'}")
        dropped |= {("runs", k) for k in runs if k not in objectives}
        runs = {k: v for k, v in runs.items() if k in objectives}
    if dataset is not None:
        if dataset not in datasets:
            raise ValueError(f"unknown dataset {dataset!r}; datasets in params: {', '.join(datasets) or '(none)'}")
        on_it = {k: v for k, v in runs.items() if (v or {}).get("dataset") == dataset}
        if objectives is None and on_it:
            dropped |= {("runs", k) for k in runs if k not in on_it}
            runs = on_it
        else:
            runs = {k: {**(v or {}), "dataset": dataset} for k, v in runs.items()}
    if objectives is not None or dataset is not None:
        used = {(v or {}).get("dataset") for v in runs.values()}
        dropped |= {("datasets", k) for k in datasets if k not in used}
        datasets = {k: v for k, v in datasets.items() if k in used}
    p["runs"], p["datasets"] = runs, datasets
    for key, value in (("epochs", epochs), ("num_workers", num_workers)):
        if value is None:
            continue
        p.setdefault("train", {})[key] = value
        for run in runs.values():
            if isinstance(run, dict) and isinstance(run.get("train"), dict) and key in run["train"]:
                run["train"][key] = value
    valid_top = list(raw)
    for dotted, value in (overrides or {}).items():
        parts = str(dotted).split(".")
        if not all(parts):
            raise ValueError(f"overrides: bad key {dotted!r} (dotted params key such as 'train.epochs')")
        if parts[0] not in raw:
            raise ValueError(f"overrides: unknown top-level key {parts[0]!r} in {dotted!r}; "
                             f"valid: {', '.join(valid_top)}")
        if len(parts) > 1 and (parts[0], parts[1]) in dropped:
            if warn:
                warn(f"overrides: skipping {dotted!r}: {parts[0]}.{parts[1]} is not part of this run")
            continue
        node = p
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"overrides: {'.'.join(parts[: i + 1])} is a {type(nxt).__name__}, "
                                 f"not a mapping, in {dotted!r}")
            node = nxt
        node[parts[-1]] = value
    return p


def anchor_paths(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Dataset paths relative to the project root made absolute, so they hold inside a workspace too."""
    out = copy.deepcopy(params)
    for ds in (out.get("datasets") or {}).values():
        path = (ds or {}).get("path") if isinstance(ds, dict) else None
        if isinstance(path, str) and path and not Path(path).expanduser().is_absolute():
            ds["path"] = str((root / path).resolve())
    return out


def check_params(params: dict[str, Any], where: str) -> None:
    """Parse with the library's own params parser; its UserError becomes a ValueError."""
    from ssl_tasks.core.errors import UserError
    from ssl_tasks.pipeline.params import parse_params

    try:
        parse_params(params)
    except UserError as e:
        raise ValueError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- workspace


def source_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files (``git ls-files -co --exclude-standard``)."""
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


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}: {(out.stderr or out.stdout).strip()[-2000:]}")


def project_cache_dir(root: Path) -> Path:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local_cache_dir)


def prepare_workspace(root: Path, ws: Path, params: dict[str, Any] | None, flow_parameters: dict[str, Any],
                      logger: Any) -> Path:
    """Create or refresh the workspace ``ws``: source files, params.yaml, DVC without git + shared cache."""
    new = not (ws / "dvc.yaml").exists()
    ws.mkdir(parents=True, exist_ok=True)
    meta = ws / FLOW_DIR
    meta.mkdir(exist_ok=True)
    files = source_files(root)
    listing = meta / "sources.txt"
    if listing.is_file():  # files copied last time that the project no longer has
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
    env = _base_env({})
    dvc = _dvc_cmd()
    cache = project_cache_dir(root)
    if not (ws / ".dvc" / "config").is_file():
        _run([*dvc, "init", "--no-scm", "-q"], ws, env)
    _run([*dvc, "config", "--local", "core.no_scm", "true"], ws, env)
    _run([*dvc, "cache", "dir", "--local", str(cache)], ws, env)
    logger.info("%s workspace %s (%d source files; DVC cache %s)", "created" if new else "refreshed", ws,
                len(files), cache)
    return ws


def _flow_run_ids() -> tuple[str, str]:
    from prefect.runtime import flow_run

    rid, name = flow_run.get_id(), flow_run.get_name()
    if not rid:
        rid, name = uuid.uuid4().hex, time.strftime("run-%Y%m%d-%H%M%S")
    return str(name), str(rid).replace("-", "")[:8]


def resolve_workspace(root: Path, workspace: str | None, has_params: bool) -> Path | None:
    """None: run in the project root. Else the workspace directory to use."""
    if workspace is None and not has_params:
        return None
    if workspace in (None, "", "new"):
        name, short = _flow_run_ids()
        return root / WORKSPACES_DIR / f"{name}-{short}"
    path = Path(workspace).expanduser()
    path = path if path.is_absolute() else root / WORKSPACES_DIR / path
    path = path.resolve()
    if path == root:
        if has_params:
            raise ValueError("parameters are applied in a workspace, never to the project's own params.yaml: "
                             "leave workspace empty (or 'new') or name another directory")
        return None
    return path


# ----------------------------------------------------------------------------- DVC


def _dvc_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "dvc"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def _base_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for k, v in QUIET_ENV.items():
        env.setdefault(k, v)
    env.update(extra)
    return env


def stage_order(run_dir: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in the order ``dvc repro`` runs them (DVC's own plan of its graph)."""
    from dvc.repo import Repo

    with Repo(str(run_dir)) as repo:
        try:
            from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

            targets = [str(Path(repo.root_dir) / "dvc.yaml")]  # what a bare `dvc repro` reproduces
            steps = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, targets))
        except ImportError:  # DVC moved its planner: a post-order walk of the graph is the same plan
            import networkx as nx

            steps = list(nx.dfs_postorder_nodes(repo.index.graph))
        return [_address(s, Path(repo.root_dir)) for s in steps]


def _address(stage: Any, root: Path) -> str:
    """``stage.addressing`` relative to the run directory (DVC's is relative to the process's cwd)."""
    rel = Path(os.path.relpath(stage.path, root)).as_posix()
    name = getattr(stage, "name", None)
    if not name:  # a .dvc file
        return rel
    return name if rel == "dvc.yaml" else f"{rel}:{name}"


def stage_tags(stage: str, run_dir: Path) -> list[str]:
    """Task-run tags of ``stage`` (a DVC address such as ``pretrain@simclr``) in ``run_dir``."""
    base, _, key = stage.split(":")[-1].partition("@")
    if base != "pretrain":
        return []
    from ssl_tasks.core.errors import UserError
    from ssl_tasks.pipeline.params import load_params

    tags = [PRETRAIN_TAG]
    try:
        if key and load_params(Path(run_dir) / "params.yaml").train_for(key).use_gpu:
            tags.append(GPU_TAG)
    except UserError:  # unreadable params: the stage itself reports them, with the stage's own error
        pass
    return tags


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, run_dir: str, extra_env: dict[str, str]) -> dict[str, Any]:
    """``dvc repro --single-item <stage>`` in ``run_dir``; output streamed into the run log line by line."""
    logger = get_run_logger()
    env = _base_env(extra_env)
    cmd = [*_dvc_cmd(), "repro", "--single-item", stage]
    logger.info("$ dvc repro --single-item %s   (in %s)", stage, run_dir)
    t0 = time.perf_counter()
    tail: deque[str] = deque(maxlen=15)
    errors: list[str] = []
    status = "unknown"
    proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace")
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line.strip():
                continue
            tail.append(line)
            for needle, st in _STATUS:
                if needle in line and status == "unknown":
                    status = st
            if _ERROR_LINE.search(line):
                errors.append(line.strip())
                logger.error("%s", line)
            elif line.lstrip().startswith("WARNING"):
                logger.warning("%s", line)
            else:
                logger.info("%s", line)
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # cancelled or interrupted: stop DVC and its command
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    seconds = round(time.perf_counter() - t0, 1)
    if rc != 0:
        shown = errors[-6:] if errors else list(tail)[-10:]
        raise StageFailed(f"stage {stage} failed (exit {rc}) in {run_dir}:\n" + "\n".join(shown))
    logger.info("stage %s: %s (%.1f s)", stage, status, seconds)
    return {"stage": stage, "status": status, "seconds": seconds}


# ----------------------------------------------------------------------------- flow


def _leaderboard_rows(csv: Path) -> list[dict[str, Any]]:
    import pandas as pd

    df = pd.read_csv(csv)
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


@flow(name="ssl-pipeline", description="The dvc.yaml stages (ingest, validate, baselines, pretrain, evaluate, "
      "compare), run by DVC, one task per stage; parameters run in their own workspace.")
def ssl_pipeline(
    params_file: str | None = None,
    dataset: str | None = None,
    objectives: list[str] | None = None,
    epochs: int | None = None,
    num_workers: int | None = None,
    overrides: dict[str, Any] | None = None,
    workspace: str | None = None,
    project_root: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline of ``dvc.yaml``.

    Args:
        params_file: a params file to start from instead of the project's params.yaml (relative to the
            project, e.g. "configs/text.yaml": the language pipeline); it always runs in a workspace.
        dataset: a dataset of params.yaml: run only the runs on it (or point the kept runs at it).
        objectives: run names from params.yaml ``runs`` to keep (e.g. ["simclr", "byol"]).
        epochs: pretraining epochs (``train.epochs``).
        num_workers: Ray Train workers (``train.num_workers``).
        overrides: dotted params keys -> values, like ``dvc exp run -S`` (``{"baselines.supervised_epochs": 2}``).
        workspace: None: the project root without parameters, a new workspace with them; "new": a new
            workspace; a name (under <root>/workspaces/) or absolute path: that workspace.
        project_root: the project (default: the repository holding this file).

    Returns:
        {"workspace", "leaderboard_csv", "leaderboard" (rows), "stages" (per stage: ran/unchanged/restored)}.
    """
    logger = get_run_logger()
    root = Path(project_root).expanduser().resolve() if project_root else PROJECT_ROOT
    if not (root / "dvc.yaml").is_file() or not (root / "params.yaml").is_file():
        raise ValueError(f"project_root {root} has no dvc.yaml and params.yaml")
    given = {k: v for k, v in {"dataset": dataset, "objectives": objectives, "epochs": epochs,
                               "num_workers": num_workers, "overrides": overrides}.items() if v is not None}
    base = root / "params.yaml"
    if params_file:
        base = Path(params_file).expanduser()
        base = base if base.is_absolute() else root / base
        if not base.is_file():
            raise ValueError(f"params_file {params_file!r}: no such file ({base})")
    params = None
    if given or params_file:
        raw = yaml.safe_load(base.read_text()) or {}
        params = anchor_paths(apply_parameters(raw, warn=logger.warning, **given), root)
        check_params(params, f"{base.name} with the flow parameters")
        given = {**({"params_file": str(params_file)} if params_file else {}), **given}
    ws = resolve_workspace(root, workspace, bool(given))
    with _workspace_lock(ws):
        return _run_pipeline(root, ws, params, given, logger)


@contextlib.contextmanager
def _workspace_lock(ws: Path | None) -> Iterator[None]:
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


def _run_pipeline(root: Path, ws: Path | None, params: dict[str, Any] | None, given: dict[str, Any],
                  logger: Any) -> dict[str, Any]:
    extra_env: dict[str, str] = {}
    if ws is None:
        run_dir = root
        logger.info("running in the project root %s", root)
    else:
        run_dir = prepare_workspace(root, ws, params, given, logger)
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # one MLflow store for the project and its workspaces
            extra_env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        _init_local_store(root, run_dir)
    extra_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(run_dir), os.environ.get("PYTHONPATH")) if p)
    from prefect.runtime import flow_run

    if flow_run.get_id() and not os.environ.get("PREFECT__FLOW_RUN_ID"):
        extra_env["PREFECT__FLOW_RUN_ID"] = str(flow_run.get_id())  # tagged on the MLflow parent run

    stages = stage_order(run_dir)
    logger.info("stages (dvc repro order): %s", ", ".join(stages))
    results = []
    for stage in stages:
        retries = RETRY_STAGES.get(stage.split(":")[-1].split("@")[0], 0)
        options: dict[str, Any] = {"retries": retries, "retry_delay_seconds": 2} if retries else {}
        tags = stage_tags(stage, run_dir)
        if tags:
            options["tags"] = tags
        t = run_stage.with_options(**options) if options else run_stage
        results.append(t(stage, str(run_dir), extra_env))

    from ssl_tasks.pipeline.layout import Layout

    layout = Layout(run_dir)
    csv = layout.leaderboard("csv")
    rows = _leaderboard_rows(csv) if csv.is_file() else []
    _publish(layout, logger)
    return {"workspace": str(run_dir), "leaderboard_csv": str(csv), "leaderboard": rows,
            "stages": {r["stage"]: r["status"] for r in results}}


def _init_local_store(root: Path, run_dir: Path) -> None:
    """Create the project's sqlite MLflow store and experiment before any stage runs.

    The tracking adapter does it under a file lock, with artifacts beside the project's database,
    so stages of two flow runs starting at once find it ready.
    """
    from ssl_tasks.pipeline.params import load_params
    from ssl_tasks.tracking.mlflow_tracking import ensure_experiment

    ensure_experiment(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                      load_params(run_dir / "params.yaml").tracking.experiment)


def _publish(layout: Any, logger: Any) -> None:
    md = layout.leaderboard("md")
    if not md.is_file():
        return
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=md.read_text(), key="ssl-leaderboard",
                                 description=f"Leaderboard of {layout.root}")
    except Exception as e:  # the UI artifact is a convenience; the files are the record
        logger.warning("could not publish the leaderboard artifact: %s", e)
