"""Ray Train: 2 workers with gradient sync, a worker killed mid-epoch resumes, a restarted job resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import plugin_objective_config

from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from ssl_tasks.training.ray_runner import init_ray

    init_ray()
    yield
    ray.shutdown()


TESTS = Path(__file__).resolve().parents[1]


def job(data: Path, *, workers: int, epochs: int, fault: dict | None = None, max_failures: int = 2) -> TrainJob:
    """SimCLR on the digits; with ``fault``, the test plug-in's SimCLR that kills its own worker once, on cue
    (tests/fault_plugin.py, imported by every Ray worker: no fault hook in the library)."""
    mean, std = channel_stats(ImageDataset(data))
    plugin = {"plugins": ("fault_plugin",), "plugin_root": str(TESTS)} if fault else {}
    objective = "faulty_simclr" if fault else "simclr"
    kwargs = {"temperature": 0.2, **(fault or {})}
    cfg = plugin_objective_config("fault_plugin", objective, kwargs) if fault else objective_config(objective, kwargs)
    return TrainJob(run="simclr-ray", seed=0, data_dir=str(data), objective=objective, objective_config=cfg,
                    encoder="small_cnn",
                    encoder_kwargs={"width": 8},
                    train=TrainConfig(epochs=epochs, batch_size=64, num_workers=workers, max_failures=max_failures),
                    mean=mean, std=std, **plugin)


def test_two_workers_killed_worker_resumes_from_checkpoint(ray_local, digits_dataset: Path, tmp_path: Path) -> None:
    from ssl_tasks.training.ray_runner import fit

    marker = tmp_path / "killed"
    # 2 workers x 64 of 1438 images: 11 steps per epoch, so worker 1 dies at step 3 of epoch 2
    j = job(digits_dataset, workers=2, epochs=3,
            fault={"fault_rank": 1, "fault_after_steps": 11 + 3, "marker": str(marker), "delay_s": 5})
    state = fit(j, storage_dir=tmp_path / "ray", name="kill-test")
    assert marker.read_text() == "killed\n"  # worker 1 really died (SIGKILL) in epoch 2
    history = json.loads(state["history"])
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert json.loads(state["resumed"]) == [1]  # restarted from the epoch-1 checkpoint, not from scratch
    # 2 workers x 64 per step over 1438 samples -> 11 steps per epoch
    assert history[0]["train/samples_per_s"] > 0
    assert set(state["eval_encoder"]) and all(torch.isfinite(v).all() for v in state["eval_encoder"].values()
                                              if v.dtype.is_floating_point)
    assert not (tmp_path / "ray" / "kill-test").exists()  # storage cleaned after success


def test_restarted_job_resumes_from_stored_checkpoint(ray_local, digits_dataset: Path, tmp_path: Path) -> None:
    """A run that dies for good (no retries left) is resumed by the next fit() with the same name."""
    from ssl_tasks.training.ray_runner import fit

    marker = tmp_path / "killed"
    j = job(digits_dataset, workers=1, epochs=2, max_failures=0,
            fault={"fault_rank": 0, "fault_after_steps": 22 + 2, "marker": str(marker), "delay_s": 5})  # 22 steps/epoch
    with pytest.raises(Exception):
        fit(j, storage_dir=tmp_path / "ray", name="restart-test")
    assert marker.exists()
    state = fit(j, storage_dir=tmp_path / "ray", name="restart-test")
    assert json.loads(state["resumed"]) == [1]
    assert [h["epoch"] for h in json.loads(state["history"])] == [1.0, 2.0]


def test_with_a_shared_store_the_project_disk_gets_nothing_and_a_killed_worker_resumes_from_the_store(
        ray_local, digits_dataset: Path, tmp_path: Path) -> None:
    """``store``: Ray Train's checkpoints live in the store, and the workers read the dataset and the plug-in from
    their node's cache of it (a file:// store here: the S3 one on two nodes is tests/infra/test_shared_services.py)."""
    from ssl_tasks.training.config import job_to_dict
    from ssl_tasks.training.ray_runner import fit
    from ssl_tasks.training.store import STAGED, stage_job

    marker, store = tmp_path / "killed", tmp_path / "store"
    j = job(digits_dataset, workers=2, epochs=3,
            fault={"fault_rank": 1, "fault_after_steps": 11 + 3, "marker": str(marker), "delay_s": 5})
    state = fit(j, storage_dir=tmp_path / "ray", name="store-kill", store=f"file://{store}")
    assert marker.read_text() == "killed\n"
    assert json.loads(state["resumed"]) == [1]  # from the epoch-1 checkpoint, which only the store held
    assert [h["epoch"] for h in json.loads(state["history"])] == [1.0, 2.0, 3.0]
    assert not (tmp_path / "ray").exists()  # nothing on the local storage path
    assert (store / "train").is_dir() and not (store / "train" / "store-kill").exists()  # cleaned after success
    staged = stage_job(job_to_dict(j), f"file://{store}")  # the same content: the same trees, nothing uploaded
    data = Path(os.environ["SSL_TASKS_CACHE"]) / "trees" / staged["data_dir"].removeprefix(STAGED)
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in digits_dataset.iterdir())
    plugin = Path(os.environ["SSL_TASKS_CACHE"]) / "trees" / staged["plugin_root"].removeprefix(STAGED)
    assert [p.name for p in plugin.iterdir()] == ["fault_plugin.py"]
