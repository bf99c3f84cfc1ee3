"""Collapse monitoring, shown with the textbook collapsing configuration: SimSiam without its stop-gradient
(Chen & He 2021, Sec. 4.1). With it the run stays healthy; without it the monitors flag the collapse, and
``train.stop_on_collapse`` stops the run with a message that says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_tasks.training.config import TrainConfig, TrainJob
from ssl_tasks.training.loop import CollapseError, LocalSession, run_training


def _job(data: Path, stop_gradient: bool, stop_on_collapse: bool = False, epochs: int = 4) -> TrainJob:
    return TrainJob(run="simsiam", seed=0, data_dir=str(data), objective="simsiam",
                    objective_kwargs={"stop_gradient": stop_gradient, "proj_hidden_dim": 128, "proj_dim": 128,
                                      "pred_hidden_dim": 32},
                    encoder="small_cnn", encoder_kwargs={"width": 8},
                    train=TrainConfig(epochs=epochs, batch_size=128, lr=0.01, warmup_epochs=0,
                                      stop_on_collapse=stop_on_collapse),
                    mean=(0.3,), std=(0.37,))


def test_without_stop_gradient_collapse_is_flagged(digits_dataset: Path, tmp_path: Path) -> None:
    bad, good = LocalSession(tmp_path / "bad"), LocalSession(tmp_path / "good")
    run_training(_job(digits_dataset, stop_gradient=False), bad)
    run_training(_job(digits_dataset, stop_gradient=True), good)
    assert bad.reports[-1]["monitor/collapsed"] == 1.0
    assert good.reports[-1]["monitor/collapsed"] == 0.0
    assert bad.reports[-1]["monitor/embedding_std"] < 0.1 * good.reports[-1]["monitor/embedding_std"]


def test_stop_on_collapse_stops_early_with_a_clear_message(digits_dataset: Path, tmp_path: Path) -> None:
    session = LocalSession(tmp_path / "stop")
    with pytest.raises(CollapseError, match=r"run 'simsiam' collapsed at epoch \d+"):
        run_training(_job(digits_dataset, stop_gradient=False, stop_on_collapse=True, epochs=20), session)
    assert len(session.reports) < 20  # stopped early
