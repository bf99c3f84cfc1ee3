"""Prefect only: thin flows and deployments over the one DAG in ``dvc.yaml`` (run by DVC itself).

The work they call (parameter overrides, workspaces, DVC as a subprocess) is ``ssl_tasks.orchestration``.
"""
