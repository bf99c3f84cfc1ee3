"""Divergence is flagged like collapse (issue 25, item 6): ``lr: 1000`` trained to garbage with a finite loss, exit 0
and quiet collapse monitors. The encoder's weight norm against its initial norm flags it every epoch, in the history
(and from there meta.json, the MLflow tag and the leaderboard); a healthy run stays near 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_tasks.pipeline.leaderboard import build_leaderboard, to_markdown
from ssl_tasks.pipeline.params import EvaluationParams
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import LocalSession, run_training
from ssl_tasks.training.monitors import DIVERGED_WEIGHT_RATIO


def _history(data: Path, ckpt: Path, lr: float) -> list[dict[str, float]]:
    job = TrainJob(run="d", seed=0, data_dir=str(data), objective="simclr", objective_config=objective_config("simclr", {}),
                   encoder="small_cnn", encoder_kwargs={"width": 8},
                   train=TrainConfig(epochs=2, batch_size=512, lr=lr, warmup_epochs=0, monitor_samples=256),
                   mean=(0.3,), std=(0.37,))
    session = LocalSession(ckpt)
    run_training(job, session)
    return session.reports


@pytest.mark.parametrize("lr,diverged", [(1000.0, True), (2e-3, False)])
def test_exploding_weights_flag_the_run_diverged(digits_dataset: Path, tmp_path: Path, lr: float, diverged: bool) -> None:
    history = _history(digits_dataset, tmp_path / "ckpt", lr)
    assert [bool(r["monitor/diverged"]) for r in history] == [diverged, diverged]
    ratios = [r["monitor/weight_norm_ratio"] for r in history]
    if diverged:
        assert min(ratios) > DIVERGED_WEIGHT_RATIO
        assert not any(r.get("monitor/collapsed") for r in history)  # the collapse monitors alone missed it
    else:
        assert all(0.9 < x < 1.2 for x in ratios), ratios


def test_a_diverged_run_is_marked_in_the_leaderboard() -> None:
    row = {"dataset": "d", "kind": "ssl", "objective": "simclr", "encoder": "small_cnn", "mlflow_run_id": "a",
           "collapsed": False, "metrics": {"knn/top1": 0.1}}
    df = build_leaderboard({"bad": {**row, "diverged": True}, "good": row}, ["knn"])
    assert df.set_index("name")["diverged"].to_dict() == {"bad": True, "good": False}
    md = to_markdown(df, EvaluationParams())
    assert "| bad (diverged) |" in md and "| good |" in md
