"""The GPU path's mixed precision (``train.precision: bf16``: autocast to bfloat16) runs on the CPU too, so the
code a GPU run takes is exercised here without a GPU."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import CHECKPOINT_FILE, LocalSession, run_training


def _train(data: Path, ckpt: Path, precision: str) -> tuple[float, dict[str, torch.Tensor]]:
    mean, std = channel_stats(ImageDataset(data))
    job = TrainJob(run=f"simclr-{precision}", seed=0, data_dir=str(data), objective="simclr",
                   objective_config=objective_config("simclr", {"temperature": 0.2}),
                   encoder="small_cnn", encoder_kwargs={"width": 8},
                   train=TrainConfig(epochs=1, batch_size=128, precision=precision), mean=mean, std=std)
    session = LocalSession(ckpt)
    run_training(job, session)
    state = torch.load(session.latest_checkpoint() / CHECKPOINT_FILE, weights_only=True)["objective"]
    return session.reports[-1]["train/loss"], state


def test_bf16_autocast_trains_on_cpu_with_fp32_weights(digits_dataset: Path, tmp_path: Path) -> None:
    loss16, state16 = _train(digits_dataset, tmp_path / "bf16", "bf16")
    loss32, state32 = _train(digits_dataset, tmp_path / "fp32", "fp32")
    assert math.isfinite(loss16) and math.isfinite(loss32)
    assert loss16 != loss32  # autocast really changed the arithmetic ...
    assert abs(loss16 - loss32) < 0.1 * abs(loss32)  # ... by rounding, not by breaking training
    floats = [k for k, v in state16.items() if v.is_floating_point()]
    assert floats and all(state16[k].dtype == torch.float32 for k in floats)  # master weights stay fp32
    assert all(torch.isfinite(state16[k]).all() for k in floats)
    assert any(not torch.equal(state16[k], state32[k]) for k in floats)
