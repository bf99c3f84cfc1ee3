"""Collapse monitoring, shown with the textbook collapsing configuration: SimSiam without its stop-gradient
(Chen & He 2021, Sec. 4.1). With it the run stays healthy; without it the monitors flag the collapse, and
``train.stop_on_collapse`` stops the run with a message that says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import CollapseError, LocalSession, run_training


def _kwargs(stop_gradient: bool) -> dict:
    return {"stop_gradient": stop_gradient, "proj_hidden_dim": 128, "proj_dim": 128, "pred_hidden_dim": 32}


def _job(data: Path, stop_gradient: bool, stop_on_collapse: bool = False, epochs: int = 12) -> TrainJob:
    return TrainJob(run="simsiam", seed=0, data_dir=str(data), objective="simsiam",
                    objective_config=objective_config("simsiam", _kwargs(stop_gradient)),
                    encoder="small_cnn", encoder_kwargs={"width": 8},
                    train=TrainConfig(epochs=epochs, batch_size=128, lr=0.05, warmup_epochs=0,
                                      stop_on_collapse=stop_on_collapse),
                    mean=(0.3,), std=(0.37,))


@pytest.mark.slow
def test_without_stop_gradient_collapse_is_flagged(digits_dataset: Path, tmp_path: Path) -> None:
    bad, good = LocalSession(tmp_path / "bad"), LocalSession(tmp_path / "good")
    run_training(_job(digits_dataset, stop_gradient=False), bad)
    run_training(_job(digits_dataset, stop_gradient=True), good)
    assert bad.reports[-1]["monitor/collapsed"] == 1.0
    assert not any(r["monitor/collapsed"] for r in good.reports)
    # the projector's outputs collapse to (nearly) one direction; with the stop-gradient they keep several
    assert bad.reports[-1]["monitor/proj_effective_rank"] < 1.5 < 3 < good.reports[-1]["monitor/proj_effective_rank"]


def test_stop_on_collapse_stops_early_with_a_clear_message(digits_dataset: Path, tmp_path: Path) -> None:
    session = LocalSession(tmp_path / "stop")
    with pytest.raises(CollapseError, match=r"run 'simsiam' collapsed at epoch \d+: encoder std .*projector std .*"
                                            r"stop_on_collapse is true"):
        run_training(_job(digits_dataset, stop_gradient=False, stop_on_collapse=True, epochs=30), session)
    assert len(session.reports) < 30 and session.reports[-1]["monitor/collapsed"] == 1.0  # stopped early


@pytest.mark.slow
def test_pretrain_stage_reports_collapse_as_one_error_line(digits_dataset: Path, tmp_path: Path) -> None:
    """Through the real stage (Ray Train, MLflow): exit 2, one readable line, the run tagged, no output left."""
    import shutil
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(digits_dataset, tmp_path / "data" / "digits")
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    job = _job(digits_dataset, stop_gradient=False)
    raw["runs"] = {"collapse": {"dataset": "digits", "objective": "simsiam", "encoder": "small_cnn",
                                "encoder_kwargs": job.encoder_kwargs, "objective_kwargs": _kwargs(False),
                                "train": {"epochs": 30, "batch_size": 128, "lr": 0.05, "warmup_epochs": 0,
                                          "stop_on_collapse": True}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    exe = Path(sys.executable).parent / "ssl-tasks"
    res = subprocess.run([str(exe), "--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path), "pretrain",
                          "--run", "collapse"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]  # Ray's worker logs interleave
    assert len(errors) == 1, res.stderr[-3000:]
    assert errors[0].startswith("error: run 'collapse' collapsed at epoch ")
    assert errors[0].endswith("stop_on_collapse is true")
    run_dir = tmp_path / "artifacts" / "runs" / "collapse"  # only the run lock (core/io.output_lock) may be there
    assert not (run_dir / "pretrain").exists() and {p.name for p in run_dir.glob("*")} <= {".pretrain.lock"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ssl-tasks").experiment_id])
    assert [(r.info.run_name, r.data.tags["collapsed"], r.info.status) for r in runs] == [("collapse", "true",
                                                                                            "FAILED")]


def test_an_objective_can_declare_its_own_collapse_signal(digits_dataset: Path, tmp_path: Path) -> None:
    """``Objective.collapse_reason`` (wav2vec 2.0: codebook perplexity) counts like the embedding monitors: it sets
    ``monitor/collapsed`` and ``stop_on_collapse`` stops the run with the objective's reason in the message."""
    from dataclasses import replace

    from ssl_tasks.objectives import OBJECTIVES
    from ssl_tasks.objectives.simsiam import SimSiam

    class JudgedSimSiam(SimSiam):  # a healthy SimSiam whose own signal says "collapsed" once its loss is known
        def collapse_reason(self, metrics: dict[str, float]) -> str | None:
            return f"loss {metrics['train/loss']:.2f} judged collapsed" if "train/loss" in metrics else None

    OBJECTIVES.register("judged_simsiam")(JudgedSimSiam)
    try:
        job = replace(_job(digits_dataset, stop_gradient=True, epochs=2), run="judged", objective="judged_simsiam")
        session = LocalSession(tmp_path / "judged")
        run_training(job, session)  # without stop_on_collapse: flagged every epoch, not stopped
        assert [r["monitor/collapsed"] for r in session.reports] == [1.0, 1.0]
        assert [r["monitor/objective_collapsed"] for r in session.reports] == [1.0, 1.0]
        assert session.reports[-1]["monitor/effective_rank"] > 1.5  # the embedding monitors alone see no collapse
        stop = LocalSession(tmp_path / "stop")
        with pytest.raises(CollapseError, match=r"run 'judged' collapsed at epoch 1: encoder std .*objective: loss "
                                                r"-?\d+\.\d\d judged collapsed"):
            run_training(replace(job, train=replace(job.train, stop_on_collapse=True)), stop)
        assert len(stop.reports) == 1
    finally:
        OBJECTIVES._items.pop("judged_simsiam")  # the registry has no unregister: keep the session's names intact
