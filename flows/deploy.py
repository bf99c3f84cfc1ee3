"""Serve the ``ssl-pipeline`` flow as a deployment that the Prefect UI can start with parameters.

Commands (from the project root, ``.venv/bin`` on PATH)::

    prefect server start --host 127.0.0.1 --port 4200            # once, in another shell
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy [--name default] [--limit 2] [--project-root PATH] \\
        [--dataset digits] [--objectives simclr,byol] [--epochs 5] [--num-workers 1] \\
        [--overrides '{"baselines.supervised_epochs": 2}']

This registers the deployment ``ssl-pipeline/<name>`` and keeps running: it executes the flow
runs created for it, at most ``--limit`` at once (default 2). Start one from the UI
(Deployments -> ssl-pipeline/<name> -> Run -> Custom run: dataset, objectives, epochs,
num_workers, overrides, workspace) or the CLI::

    prefect deployment run 'ssl-pipeline/default' -p epochs=5 -p objectives='["simclr"]' --watch

The options above only set the deployment's default parameters. A run with parameters works
in its own workspace (``workspaces/<flow-run-name>-<id>/``), so concurrent runs never overwrite
each other; a run without parameters runs ``dvc repro`` in the project root. Ctrl-C (SIGTERM)
stops serving; stop it before the Prefect server. For a work pool + worker instead of
``serve``, see ``infra/prefect/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.pipeline import PROJECT_ROOT, ssl_pipeline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.deploy", description="Serve the ssl-pipeline flow.")
    p.add_argument("--name", default="default", help="deployment name (default: default)")
    p.add_argument("--limit", type=int, default=2, help="flow runs executed at once (default: 2)")
    p.add_argument("--project-root", default=None, help=f"project the runs use (default: {PROJECT_ROOT})")
    p.add_argument("--dataset", default=None, help="default dataset parameter")
    p.add_argument("--objectives", default=None, help="default run names, comma separated (e.g. simclr,byol)")
    p.add_argument("--epochs", type=int, default=None, help="default epochs parameter")
    p.add_argument("--num-workers", type=int, default=None, help="default Ray Train workers")
    p.add_argument("--overrides", default=None, help="default overrides, a JSON object of dotted params keys")
    return p


def default_parameters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.project_root:
        root = Path(args.project_root).expanduser().resolve()
        if not (root / "dvc.yaml").is_file():
            raise SystemExit(f"error: --project-root {root} has no dvc.yaml")
        params["project_root"] = str(root)
    if args.dataset:
        params["dataset"] = args.dataset
    if args.objectives:
        params["objectives"] = [o.strip() for o in args.objectives.split(",") if o.strip()]
    if args.epochs is not None:
        params["epochs"] = args.epochs
    if args.num_workers is not None:
        params["num_workers"] = args.num_workers
    if args.overrides:
        try:
            overrides = json.loads(args.overrides)
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: --overrides is not JSON: {e}") from None
        if not isinstance(overrides, dict):
            raise SystemExit("error: --overrides must be a JSON object of dotted params keys")
        params["overrides"] = overrides
    return params


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.limit < 1:
        raise SystemExit("error: --limit must be >= 1")
    ssl_pipeline.serve(
        name=args.name,
        parameters=default_parameters(args),
        limit=args.limit,
        description="dvc.yaml stages run by DVC, one task per stage; runs with parameters get their own workspace.",
        tags=["ssl", "dvc"],
    )


if __name__ == "__main__":
    main()
