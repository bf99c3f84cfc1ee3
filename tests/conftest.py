"""Shared fixtures: quiet, local, repeatable settings for every real component."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
}
for _k, _v in QUIET.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def digits_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sklearn digits ingested through the real ingest path."""
    from ssl_tasks.data.ingest import ingest

    out = tmp_path_factory.mktemp("digits") / "digits"
    ingest("sklearn_digits", None, out, test_fraction=0.2, split_seed=0)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

