"""DVC as a subprocess: the stage plan of a run directory and ``dvc repro --single-item <stage>``.

The one adapter between the orchestration and DVC. A stage runs in its own ``dvc`` process,
so a flow leaves exactly the lineage ``dvc repro`` leaves (dvc.lock, DVC cache, MLflow runs).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

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
    "PYTHONUNBUFFERED": "1",
    "NO_COLOR": "1",  # plain log lines: tools that honour it print no colour codes
}
# What tools colour anyway (tqdm, Ray's worker prefixes): CSI sequences and OSC links, stripped from every line.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def plain(line: str) -> str:
    """``line`` without terminal escape sequences (colours, cursor moves, hyperlinks) or trailing space."""
    return _ANSI.sub("", line).rstrip()

_RESTORED = re.compile(r"^[AM]\s+(\S.*?)/?$", re.M)  # what `dvc checkout` put back: "A       data/digits/"
_ERROR_LINE = re.compile(r"^\s*(error:|ERROR:)|^\w+(Error|Exception): ")
_STATUS = (("didn't change, skipping", "unchanged"), ("is cached - skipping run", "restored"),
           ("Running stage", "ran"))


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message holds its last error lines."""


class StageResult(TypedDict):
    stage: str
    status: str  # ran | unchanged | restored | unknown
    seconds: float


def dvc_cmd() -> list[str]:
    """The ``dvc`` of this interpreter's environment."""
    exe = Path(sys.executable).parent / "dvc"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment, this venv first on PATH, tools quiet, then ``extra``."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for k, v in QUIET_ENV.items():
        env.setdefault(k, v)
    env.update(extra)
    return env


def run_dvc(args: list[str], cwd: Path) -> None:
    """``dvc <args>`` in ``cwd``; RuntimeError with its output when it fails."""
    cmd = [*dvc_cmd(), *args]
    out = subprocess.run(cmd, check=False, cwd=cwd, env=base_env({}), capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}: {(out.stderr or out.stdout).strip()[-2000:]}")


def cache_dir(root: Path) -> Path:
    """The local DVC cache directory of the repository ``root``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local_cache_dir)


def init_without_git(run_dir: Path, cache: Path) -> None:
    """Make ``run_dir`` a DVC repository without git (if it is none yet) that uses the DVC cache ``cache``."""
    if not (run_dir / ".dvc" / "config").is_file():
        run_dvc(["init", "--no-scm", "-q"], run_dir)
    run_dvc(["config", "--local", "core.no_scm", "true"], run_dir)
    run_dvc(["cache", "dir", "--local", str(cache)], run_dir)


def check_params_file(run_dir: Path) -> None:
    """Read ``run_dir``'s params.yaml before DVC does: a key given twice (a snippet's ``datasets:`` pasted below the
    existing one) or a YAML syntax error is one ``UserError`` line naming both lines, instead of ruamel's
    traceback from deep inside ``dvc repro`` (PyYAML would keep the last of two keys silently)."""
    from ssl_tasks.core.config import load_yaml

    path = Path(run_dir) / "params.yaml"
    if path.is_file():
        load_yaml(path.read_text(), "params.yaml")


def stage_order(run_dir: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in the order ``dvc repro`` runs them (DVC's own plan of its graph)."""
    from dvc.repo import Repo

    check_params_file(run_dir)  # DVC reads params.yaml for its graph: its own one-line error first

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


def stage_retries(stage: str) -> int:
    """How often the task of ``stage`` (a DVC address such as ``ingest@digits``) is retried."""
    return RETRY_STAGES.get(stage.split(":")[-1].split("@")[0], 0)


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


def repro_stage(stage: str, run_dir: Path, extra_env: dict[str, str],
                log: Callable[[int, str], None]) -> StageResult:
    """``dvc repro --single-item <stage>`` in ``run_dir``, each output line passed to ``log(level, line)``.

    Error lines go out at ``logging.ERROR``, DVC warnings at ``logging.WARNING``, the rest at
    ``logging.INFO``. On a non-zero exit the stage's last good outputs are put back (``restore_outputs``)
    and StageFailed is raised with the last error lines and what was restored; the DVC process is stopped
    if the caller is interrupted.
    """
    log(logging.INFO, f"$ dvc repro --single-item {stage}   (in {run_dir})")
    t0 = time.perf_counter()
    tail: deque[str] = deque(maxlen=15)
    errors: list[str] = []
    status = "unknown"
    proc = subprocess.Popen([*dvc_cmd(), "repro", "--single-item", stage], cwd=run_dir, env=base_env(extra_env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, errors="replace")
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = plain(raw)
            if not line.strip():
                continue
            tail.append(line)
            if status == "unknown":
                status = next((st for needle, st in _STATUS if needle in line), status)
            if _ERROR_LINE.search(line):
                errors.append(line.strip())
                log(logging.ERROR, line)
            else:
                log(logging.WARNING if line.lstrip().startswith("WARNING") else logging.INFO, line)
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
        restored = restore_outputs(run_dir, [stage])
        log(logging.WARNING, restored)
        raise StageFailed(f"stage {stage} failed (exit {rc}) in {run_dir}:\n" + "\n".join([*shown, restored]))
    log(logging.INFO, f"stage {stage}: {status} ({seconds:.1f} s)")
    return {"stage": stage, "status": status, "seconds": seconds}


def restore_outputs(run_dir: Path, stages: Sequence[str] = ()) -> str:
    """After a failed ``dvc repro``: ``dvc checkout`` of ``stages`` (none: every stage) in ``run_dir``; one line
    saying what it put back.

    DVC deletes a stage's outputs before running its command and rewrites the stage's ``dvc.lock`` entry only
    when the command succeeds, so after a failure ``dvc.lock`` still names the stage's last good outputs, and
    every output but metrics and compare's is in the DVC cache. A checkout of a failed stage is forced: what is
    at its output paths now was written by the failed command. Stages that succeeded earlier in the same repro
    have new lock entries matching their outputs, so a checkout of every stage leaves them as they are.
    Outputs missing from the cache (a stage that never ran here) are skipped.
    """
    force = ["--force"] if stages else []
    cmd = [*dvc_cmd(), "checkout", "--allow-missing", *force, *stages]
    out = subprocess.run(cmd, check=False, cwd=run_dir, env=base_env({}), capture_output=True, text=True,
                         timeout=600)
    what = ", ".join(stages) if stages else "the pipeline"
    if out.returncode != 0:
        said = " ".join(plain(x).strip() for x in (out.stderr or out.stdout).splitlines() if x.strip())
        return f"could not restore the last good outputs of {what} (dvc checkout, exit {out.returncode}): {said[-600:]}"
    restored = sorted(_RESTORED.findall(plain(out.stdout)))
    if not restored:
        return f"dvc checkout: no output of {what} needed restoring"
    return f"dvc checkout restored the last good outputs of {what} from the DVC cache: {', '.join(restored)}"


def repro_or_restore(args: Sequence[str], run_dir: Path) -> int:
    """``dvc repro <args>`` in ``run_dir`` on this terminal; when it fails (or is interrupted), ``restore_outputs``
    of every stage and one ``error:`` line on stderr naming what was restored. Returns DVC's exit status. A
    params.yaml DVC cannot read is refused first (``check_params_file``): nothing ran, so nothing is restored."""
    check_params_file(run_dir)
    proc = subprocess.Popen([*dvc_cmd(), "repro", *args], cwd=run_dir)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # DVC got the interrupt too: let it stop its command and release its locks
        rc = proc.wait()
    if rc != 0:
        print(f"error: dvc repro failed (exit {rc}); {restore_outputs(run_dir)}", file=sys.stderr, flush=True)
    return rc
