"""What a job brings to a Ray cluster it joins (``ray_runner.job_env``): the cluster's processes were not started from
the stage's environment, so whatever the workers and the Train controller need must travel with the job."""

from __future__ import annotations

import pytest

from ssl_tasks.training.ray_runner import QUIET_ENV, job_env


def test_the_tracking_credentials_and_controller_settings_travel_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("HOME_SECRET_OF_SOMETHING_ELSE", "x")
    env = job_env()
    assert env["MLFLOW_TRACKING_USERNAME"] == "ada" and env["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert {k: env[k] for k in QUIET_ENV} == QUIET_ENV  # e.g. the controller's 0.25 s poll, not Ray's 2 s
    assert "HOME_SECRET_OF_SOMETHING_ELSE" not in env and "PATH" not in env
    assert all(k in QUIET_ENV or k.startswith(("MLFLOW_", "AWS_")) for k in env)
