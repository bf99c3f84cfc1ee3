"""One pipeline run's setup and result: project root, run directory and stage environment, leaderboard."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_tasks.orchestration.workspace import prepare_workspace


def resolve_root(given: str | None, default: Path) -> Path:
    """``given`` (or ``default``) resolved; ValueError unless it holds a dvc.yaml and a params.yaml."""
    root = Path(given).expanduser().resolve() if given else default
    if not (root / "dvc.yaml").is_file() or not (root / "params.yaml").is_file():
        raise ValueError(f"project_root {root} has no dvc.yaml and params.yaml")
    return root


def mlflow_uri(root: Path) -> str:
    """The project's MLflow store, shared by the project root and all its workspaces."""
    return f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


def prepare_run(root: Path, ws: Path | None, params: dict[str, Any] | None, flow_parameters: dict[str, Any],
                log: Callable[[str], None], extra_env: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    """The run directory (``ws`` prepared, or ``root``) and the environment additions for its stages.

    Without a configured ``MLFLOW_TRACKING_URI`` a workspace's stages log to the project's store
    (``mlflow_uri``), created before any stage runs. ``PYTHONPATH`` starts with the run directory,
    so stages import its copy of the code. ``extra_env`` is added as given.
    """
    env: dict[str, str] = {}
    if ws is None:
        run_dir = root
        log(f"running in the project root {root}")
    else:
        run_dir = prepare_workspace(root, ws, params, flow_parameters, log)
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            env["MLFLOW_TRACKING_URI"] = mlflow_uri(root)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        init_local_store(root, run_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(run_dir), os.environ.get("PYTHONPATH")) if p)
    env.update(extra_env or {})
    return run_dir, env


def init_local_store(root: Path, run_dir: Path) -> None:
    """Create the project's sqlite MLflow store and experiment before any stage runs.

    The tracking adapter does it under a file lock, with artifacts beside the project's database,
    so stages of two flow runs starting at once find it ready.
    """
    from ssl_tasks.pipeline.params import load_params
    from ssl_tasks.tracking.mlflow_tracking import ensure_experiment

    ensure_experiment(mlflow_uri(root), load_params(run_dir / "params.yaml").tracking.experiment)


@dataclass
class Leaderboard:
    """The leaderboard files of a run directory and the CSV's rows (empty when there is none)."""

    csv: Path
    md: Path
    rows: list[dict[str, Any]] = field(default_factory=list)


def leaderboard(run_dir: Path) -> Leaderboard:
    """Read the leaderboard that the ``compare`` stage wrote in ``run_dir``."""
    from ssl_tasks.pipeline.layout import Layout

    layout = Layout(run_dir)
    board = Leaderboard(csv=layout.leaderboard("csv"), md=layout.leaderboard("md"))
    if board.csv.is_file():
        import pandas as pd

        df = pd.read_csv(board.csv)
        board.rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    return board
