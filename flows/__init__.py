"""Prefect only: thin flows and deployments over the one DAG in ``dvc.yaml`` (run by DVC itself)."""
