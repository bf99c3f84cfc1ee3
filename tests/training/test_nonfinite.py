"""A non-finite loss stops the run at once with one line naming the run, epoch and step; nothing trains on.

An lr of 1e30 is the diverging run made certain: the first step sees the initial weights (a finite loss) and its
update leaves weights the next forward cannot compute with. One step per epoch puts that next step in epoch 2,
after one good checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import CHECKPOINT_FILE, LocalSession, run_training

MESSAGE = r"run 'boom': loss became nan at epoch 2, step 1/1 \(lr [0-9.e+]+\); stopped there: lower train.lr"


def _job(data: Path, lr: float = 1e30, std: tuple[float, ...] = (0.37,)) -> TrainJob:
    # digits: 1438 training images, so batches of 1024 make one step per epoch
    return TrainJob(run="boom", seed=0, data_dir=str(data), objective="simclr",
                    objective_config=objective_config("simclr", {}),
                    encoder="small_cnn", encoder_kwargs={"width": 8},
                    train=TrainConfig(epochs=4, batch_size=1024, lr=lr, warmup_epochs=0, optimizer="sgd",
                                      monitor_samples=256, max_failures=2),
                    mean=(0.3,), std=std)


def test_a_diverging_run_stops_at_the_first_nonfinite_loss(digits_dataset: Path, tmp_path: Path) -> None:
    session = LocalSession(tmp_path / "ckpt")
    with pytest.raises(UserError, match=MESSAGE):
        run_training(_job(digits_dataset), session)
    assert [r["epoch"] for r in session.reports] == [1.0]  # epoch 1 reported, nothing after the bad step
    assert math.isfinite(session.reports[0]["train/loss"])
    state = torch.load(session.ckpt_dir / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 1  # the last checkpoint is the one before the bad step
    assert all(torch.isfinite(v).all() for v in state["eval_encoder"].values() if v.is_floating_point())


def test_nonfinite_input_stops_at_the_first_step(digits_dataset: Path, tmp_path: Path) -> None:
    session = LocalSession(tmp_path / "ckpt")
    with pytest.raises(UserError, match=r"run 'boom': loss became nan at epoch 1, step 1/1 "):
        run_training(_job(digits_dataset, lr=1e-3, std=(0.0,)), session)  # x / 0: every input is inf or nan
    assert session.reports == [] and not session.ckpt_dir.exists()


@pytest.mark.parametrize("lr", [math.inf, math.nan, 0.0])
def test_a_nonfinite_lr_is_refused_when_read(lr: float) -> None:
    with pytest.raises(ValueError, match="lr must be > 0 and finite"):
        TrainConfig(lr=lr)


@pytest.mark.slow
def test_under_ray_the_verdict_is_raised_once_without_retries(digits_dataset: Path, tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    """Through Ray Train with max_failures=2: the same one-line UserError, no restart from the checkpoint."""
    from ssl_tasks.training.ray_runner import fit

    with pytest.raises(UserError, match=MESSAGE):
        fit(_job(digits_dataset), storage_dir=tmp_path / "ray", name="boom")
    out = capfd.readouterr()
    assert "resumed from checkpoint" not in out.out + out.err  # a retry would resume at epoch 1 and print so


def test_a_batch_larger_than_the_data_is_refused_before_training(digits_dataset: Path, tmp_path: Path) -> None:
    """1438 images make no full batch of 4096: one clear line, not a ZeroDivisionError after an empty epoch."""
    from dataclasses import replace

    job = _job(digits_dataset, lr=0.1)
    job = replace(job, train=replace(job.train, batch_size=4096))
    session = LocalSession(tmp_path / "ckpt")
    with pytest.raises(UserError, match=r"runs\.boom: 1438 training samples make no full batch of train\.batch_size "
                                        r"4096 x 1 worker\(s\); lower train\.batch_size"):
        run_training(job, session)
    assert session.reports == [] and not (tmp_path / "ckpt").exists()
