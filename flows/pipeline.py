"""Prefect flow ``ssl-pipeline``: the stages of ``dvc.yaml``, run by DVC itself, one task per stage.

One DAG, one implementation: the stage list comes from DVC's own graph of the run directory
(the order ``dvc repro`` uses) and every task runs ``dvc repro --single-item <stage>``, so a
flow run leaves exactly the lineage ``dvc repro`` leaves (dvc.lock, DVC cache, MLflow runs)
and unchanged stages are skipped by DVC.

Where it runs:

- no parameters (every one left at its default): in the project root (same dvc.lock and outputs as
  ``dvc repro`` there);
- any of ``params_file``, ``dataset``, ``objectives``, ``epochs``, ``num_workers``, ``overrides``
  (or ``workspace="new"``): in its own workspace ``<root>/workspaces/<flow-run-name>-<id8>/``
  (e.g. ``workspaces/amber-fox-1a2b3c4d/``),
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

This module is Prefect only (flow, tasks, run ids, the leaderboard artifact); the work itself
is ``ssl_tasks.orchestration`` (parameters, workspaces, DVC), which imports no Prefect.
Run it: ``python -c "from flows.pipeline import ssl_pipeline; ssl_pipeline(epochs=1)"``,
or serve it (``python -m flows.deploy``) and start runs from the Prefect UI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from ssl_tasks.orchestration.dvc_runner import StageResult, repro_stage, stage_order, stage_retries, stage_tags
from ssl_tasks.orchestration.overrides import workspace_params
from ssl_tasks.orchestration.run import Leaderboard, leaderboard, prepare_run, resolve_root
from ssl_tasks.orchestration.workspace import new_run_ids, resolve_workspace, workspace_lock

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, run_dir: str, extra_env: dict[str, str]) -> StageResult:
    """``dvc repro --single-item <stage>`` in ``run_dir``; output streamed into the task run's log line by line."""
    return repro_stage(stage, Path(run_dir), extra_env, get_run_logger().log)


def _flow_run_ids() -> tuple[str, str]:
    """This flow run's name and id (a generated pair when called outside a flow run)."""
    rid, name = flow_run.get_id(), flow_run.get_name()
    return (str(name), str(rid)) if rid else new_run_ids()


@flow(name="ssl-pipeline", description="The dvc.yaml stages (ingest, validate, baselines, pretrain, evaluate, "
      "compare), run by DVC, one task per stage; parameters run in their own workspace.")
def ssl_pipeline(
    params_file: str = "",
    dataset: str = "",
    objectives: list[str] = [],  # noqa: B006 - never mutated; a list default renders as an editable field
    epochs: int = 0,
    num_workers: int = 0,
    overrides: dict[str, Any] = {},  # noqa: B006 - never mutated
    workspace: str = "",
    project_root: str = "",
) -> dict[str, Any]:
    """Run the pipeline of ``dvc.yaml``.

    Every parameter has a plain type and a default that means "as in params.yaml", so the Prefect UI shows each
    as an editable field (an optional type would render as "None" until its type toggle is clicked).

    Args:
        params_file: a params file to start from instead of the project's params.yaml (relative to the
            project, e.g. "configs/text.yaml": the language pipeline); it always runs in a workspace.
        dataset: a dataset of params.yaml: run only the runs on it (or point the kept runs at it); empty: all.
        objectives: run names from params.yaml runs to keep (e.g. ["simclr", "byol"]); empty: all.
        epochs: pretraining epochs (train.epochs); 0: as in the params file.
        num_workers: Ray Train workers (train.num_workers); 0: as in the params file.
        overrides: dotted params keys and values, like dvc exp run -S ({"baselines.supervised_epochs": 2}).
        workspace: empty: the project root without parameters, a new workspace (workspaces/RUN-NAME-ID8 in the
            project) with them; "new": a new workspace; a name: workspaces/NAME in the project; an absolute path:
            that folder.
        project_root: the project (empty: the repository holding this file).

    Returns:
        {"workspace", "leaderboard_csv", "leaderboard" (rows), "stages" (per stage: ran/unchanged/restored)}.
    """
    logger = get_run_logger()
    root = resolve_root(project_root or None, PROJECT_ROOT)
    given = {k: v for k, v in {"dataset": dataset, "objectives": list(objectives), "epochs": epochs,
                               "num_workers": num_workers, "overrides": dict(overrides)}.items() if v}
    params = workspace_params(root, params_file, given, warn=logger.warning)
    if params_file:
        given = {"params_file": str(params_file), **given}
    ws = resolve_workspace(root, workspace or None, bool(given), run_ids=_flow_run_ids)
    with workspace_lock(ws):
        extra_env: dict[str, str] = {}
        if flow_run.get_id() and not os.environ.get("PREFECT__FLOW_RUN_ID"):
            extra_env["PREFECT__FLOW_RUN_ID"] = str(flow_run.get_id())  # tagged on the MLflow parent run
        run_dir, env = prepare_run(root, ws, params, given, logger.info, extra_env)
        stages = stage_order(run_dir)
        logger.info("stages (dvc repro order): %s", ", ".join(stages))
        results = []
        for stage in stages:
            options: dict[str, Any] = {}
            if retries := stage_retries(stage):
                options.update(retries=retries, retry_delay_seconds=2)
            if tags := stage_tags(stage, run_dir):
                options["tags"] = tags
            t = run_stage.with_options(**options) if options else run_stage
            results.append(t(stage, str(run_dir), env))
        board = leaderboard(run_dir)
        _publish(board, run_dir)
        return {"workspace": str(run_dir), "leaderboard_csv": str(board.csv), "leaderboard": board.rows,
                "stages": {r["stage"]: r["status"] for r in results}}


def _publish(board: Leaderboard, run_dir: Path) -> None:
    """The leaderboard as a Markdown artifact in the Prefect UI (a convenience: the files are the record)."""
    if not board.md.is_file():
        return
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=board.md.read_text(), key="ssl-leaderboard",
                                 description=f"Leaderboard of {run_dir}")
    except Exception as e:  # noqa: BLE001 - never fail a finished run over the UI artifact
        get_run_logger().warning("could not publish the leaderboard artifact: %s", e)
