"""A ``TrainJob`` crosses the Ray boundary as plain data and comes back typed and equal, its objective config the
objective class's ``Config``; a finished run's meta.json gives back the run's typed config."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import plugin_objective_config

from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.pipeline.params import load_params
from ssl_tasks.training.config import (
    TrainConfig,
    TrainJob,
    job_from_dict,
    job_to_dict,
    objective_config,
    objective_config_from,
)

REPO = Path(__file__).resolve().parents[2]


def _job(name: str, cfg: object) -> TrainJob:
    return TrainJob(run=name, seed=3, data_dir="/data/x", objective=name, objective_config=cfg, encoder="small_cnn",
                    encoder_kwargs={"width": 8, "dims": [1, 2]}, train=TrainConfig(epochs=2, lr=0.1, precision="bf16"),
                    mean=(0.5, 0.25), std=(0.1, 0.2), tracking={"uri": "file:x", "run_id": "r"})


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_a_job_round_trips_through_the_ray_serialisation(name: str) -> None:
    cfg = objective_config(name, {"tokenizer": "/t/tokenizer.pt"} if OBJECTIVES.get(name).needs_tokenizer else {})
    job = _job(name, cfg)
    d = json.loads(json.dumps(job_to_dict(job)))  # plain data: what Ray's train_loop_config carries
    back = job_from_dict({**d, "_threads": 2})
    assert back == job
    assert type(back.objective_config) is OBJECTIVES.get(name).Config
    assert type(back.train) is TrainConfig and back.mean == (0.5, 0.25)


@pytest.mark.parametrize("params_file", ["params.yaml", *sorted(f"configs/{p.name}" for p in (REPO / "configs").glob(
    "*.yaml"))])
def test_every_configured_run_round_trips_typed(params_file: str) -> None:
    """Every run of the shipped params files: typed once when read, equal after the Ray boundary and after meta.json."""
    params = load_params(REPO / params_file)
    for name, run in params.runs.items():
        cfg = run.objective_config
        assert type(cfg) is OBJECTIVES.get(run.objective).Config, name
        job = _job(run.objective, cfg)
        assert job_from_dict(json.loads(json.dumps(job_to_dict(job)))) == job, name
        meta = {"objective": run.objective, "objective_kwargs": run.objective_kwargs,
                "objective_config": job_to_dict(job)["objective_config"]}
        assert objective_config_from(json.loads(json.dumps(meta))) == cfg, name
        if not OBJECTIVES.get(run.objective).needs_tokenizer:  # an older meta.json: the params kwargs only
            assert objective_config_from({"objective": run.objective, "objective_kwargs": run.objective_kwargs}) == cfg
        assert params.train_for(name) is run.train_config


def test_a_plugin_objective_is_rebuilt_in_a_process_that_never_imported_the_plugin() -> None:
    """A Ray worker is a fresh process: ``job_from_dict`` imports the job's plug-ins before typing its config."""
    cfg = plugin_objective_config("fault_plugin", "faulty_simclr", {"fault_rank": 1, "temperature": 0.3})
    job = replace(_job("faulty_simclr", cfg), plugins=("fault_plugin",), plugin_root=str(REPO / "tests"))
    code = ("import json, sys; from ssl_tasks.training.config import job_from_dict; "
            "c = job_from_dict(json.load(sys.stdin)).objective_config; "
            "print(type(c).__name__, c.fault_rank, c.temperature)")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(job_to_dict(job)), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["FaultySimCLRConfig", "1", "0.3"]
    assert "faulty_simclr" not in OBJECTIVES  # the test process's registry is the built-in one again
