"""`dvc repro` on a copy of the project: the whole DAG on real data, no-op reruns, targeted reruns,
lineage in MLflow, and a validation failure that stops the pipeline before pretraining."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import copy_project, fast_params, repro

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow



def ran(res: subprocess.CompletedProcess[str]) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", res.stdout))


def edit_params(root: Path, edit) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    edit(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("proj") / "p")
    edit_params(root, fast_params)
    return root


def test_full_dag_then_noop_then_targeted_rerun(project: Path) -> None:
    res = repro(project)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert ran(res) == {"lineage", "ingest@digits", "validate@digits", "tokenizer@digits", "baselines@digits",
                        "pretrain@simclr", "pretrain@byol", "evaluate@simclr", "evaluate@byol", "compare"}
    board = pd.read_csv(project / "artifacts" / "leaderboard.csv")
    refs = {n for n in board["name"] if n.startswith("random_init-small_cnn-") and n.endswith("@digits")}
    assert len(refs) == 1  # simclr and byol share an encoder config and seed: one random-init row for both
    assert set(board["name"]) == {"simclr", "byol", *refs, "raw_pixels@digits", "supervised@digits"}
    for col in ("knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1"):
        assert board[col].between(0.0, 1.0).all()
    by = board.set_index("name")
    ref = refs.pop()
    for run in ("simclr", "byol"):
        assert by.loc[run, "reference"] == ref
        margin = by.loc[run, "knn/top1"] - by.loc[ref, "knn/top1"]
        assert by.loc[run, "knn/top1 margin"] == pytest.approx(margin, abs=2e-4)  # the csv rounds to 4 places
    assert "Margin over random init" in (project / "artifacts" / "leaderboard.md").read_text()
    assert (project / "artifacts" / "leaderboard.png").stat().st_size > 1000
    assert "Leaderboard" in res.stdout  # printed at the end
    assert (project / "reports" / "validate" / "digits_docs").is_dir()

    again = repro(project)
    assert again.returncode == 0 and ran(again) == {"lineage"}, again.stdout  # it hashes params' files every time

    edit_params(project, lambda r: r["runs"]["simclr"]["objective_kwargs"].update(temperature=0.3))
    third = repro(project)
    assert third.returncode == 0, third.stderr[-3000:]
    assert ran(third) == {"lineage", "pretrain@simclr", "evaluate@simclr", "compare"}


def test_mlflow_lineage(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "pipeline"]
    assert len(parents) == 2  # one per pipeline execution that produced results
    first = min(parents, key=lambda r: r.info.start_time)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.info.run_id]
    names = {r.info.run_name for r in children}
    assert {"simclr", "byol", "raw_pixels@digits", "supervised@digits"} <= names
    simclr = next(r for r in children if r.info.run_name == "simclr")
    tags = simclr.data.tags
    for key in ("objective", "dataset", "encoder", "git_commit", "data_hash"):
        assert tags[key] and tags[key] != "unknown", key
    assert simclr.data.params["objective_kwargs.temperature"] == "0.2"
    assert "eval/knn/top1" in simclr.data.metrics and "monitor/effective_rank" in simclr.data.metrics
    m = simclr.data.metrics  # its random-init reference and the margin over it, beside its own figures
    assert m["eval_margin/knn/top1"] == pytest.approx(m["eval/knn/top1"] - m["eval_random_init/knn/top1"])
    history = client.get_metric_history(simclr.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]
    artifacts = {a.path for a in client.list_artifacts(simclr.info.run_id, "checkpoint")}
    assert "checkpoint/encoder.pt" in artifacts
    second = max(parents, key=lambda r: r.info.start_time)
    rerun = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert [r.info.run_name for r in rerun] == ["simclr"]  # only the rerun child; the rest are reused
    assert second.data.tags["reused_child_runs"]
    # the parent opens on the answer: named for what it compared, carrying every leaderboard cell
    assert first.info.run_name.startswith("digits: simclr, byol") and " @ " in first.info.run_name
    board = pd.read_csv(project / "artifacts" / "leaderboard.csv").set_index("name")
    assert second.data.metrics["simclr/knn/top1"] == pytest.approx(board.loc["simclr", "knn/top1"], abs=1e-4)
    baseline = next(r for r in children if r.info.run_name == "supervised@digits")  # its duration is its work
    assert baseline.info.end_time - baseline.info.start_time > 500
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_mlflow_ui_opens_on_the_comparison_in_a_real_browser(project: Path) -> None:
    """`ssl-tasks ui-link` gives the page that compares the latest pipeline's runs; headless Chromium loads it from
    a real `mlflow ui` and sees every run by name with its k-NN and linear accuracies to three decimals."""
    from browser import mlflow_ui, page_text

    board = pd.read_csv(project / "artifacts" / "leaderboard.csv")
    with mlflow_ui(project / "mlflow" / "mlflow.db", BIN) as base:
        link = subprocess.run([str(BIN / "ssl-tasks"), "ui-link", "--base", base], cwd=project, capture_output=True,
                              text=True, timeout=120)
        assert link.returncode == 0 and link.stdout.startswith(f"{base}/#/compare-runs?runs="), link.stderr
        text = page_text(link.stdout.strip())
    tracked = board[board["kind"] != "random_init"]  # random-init rows live in their run (eval_random_init/*)
    assert f"Comparing {len(tracked)} Runs" in text, text[:2000]
    metrics = text[text.index("Metrics"):]
    shown = set(re.findall(r"\b[01]\.\d{1,3}\b", metrics))
    for _, row in board.iterrows():
        assert row["kind"] == "random_init" or row["name"] in text
        for col in ("knn/top1", "linear/top1"):  # the UI drops trailing zeros: 0.950 shows as 0.95
            assert f"{row[col]:.3f}".rstrip("0").rstrip(".") in shown, (row["name"], col, row[col], metrics[:1500])


def test_seeds_rerun_that_run_and_report_an_interval(project: Path) -> None:
    """Runs after the lineage test on the same project: two seeds for simclr only."""
    from mlflow.tracking import MlflowClient

    edit_params(project, lambda r: r["runs"]["simclr"].update(seeds=[0, 1]))
    res = repro(project)
    assert res.returncode == 0, res.stderr[-3000:]
    assert ran(res) == {"lineage", "pretrain@simclr", "evaluate@simclr", "compare"}
    pre = project / "artifacts" / "runs" / "simclr" / "pretrain"
    assert sorted(p.name for p in pre.iterdir()) == ["seed-0", "seed-1", "seeds.json"]
    assert not list((project / "artifacts" / ".ray").glob("*.done"))  # staging cleaned up
    board = pd.read_csv(project / "artifacts" / "leaderboard.csv").set_index("name")
    assert board.loc["simclr", "n_seeds"] == 2 and board.loc["byol", "n_seeds"] == 1
    assert board.loc["simclr", "knn/top1_ci95"] > 0 and board.loc["byol", "knn/top1_ci95"] == 0
    assert " ± " in (project / "artifacts" / "leaderboard.md").read_text()
    two, one = board.loc["simclr", "reference"], board.loc["byol", "reference"]
    assert two != one and board.loc[two, "n_seeds"] == 2  # simclr's reference now has its two seeds too
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    newest = max((r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "pipeline"),
                 key=lambda r: r.info.start_time)
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{newest.info.run_id}'")
    assert sorted((r.info.run_name, r.data.tags["seed"]) for r in kids) == [("simclr", "0"), ("simclr", "1")]
    assert all("eval/knn/top1" in r.data.metrics for r in kids)


def test_validation_failure_stops_before_pretraining(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")

    def strict(raw: dict) -> None:
        fast_params(raw, runs=("simclr",))
        raw["datasets"]["digits"]["validation"]["min_class_fraction"] = 1.0  # digits classes are not exactly equal

    edit_params(root, strict)
    res = repro(root)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "validation failed" in out and "class" in out
    assert not (root / "artifacts" / "runs").exists()
    assert "pretrain@simclr" not in ran(res)
