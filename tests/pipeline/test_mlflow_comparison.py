"""What a user sees of a comparison in MLflow, against a real sqlite store: the experiment opens on the runs (not
MLflow 3's GenAI view), a run logged after the fact shows its real duration, the parent names what it compared and
carries the leaderboard, and `ssl-tasks ui-link` points at the compare page of the latest pipeline's runs."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssl_tasks.core.errors import UserError
from ssl_tasks.pipeline.compare import comparison_link, experiment_link, leaderboard_metrics, parent_name
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.leaderboard import axis_limits, leaderboard_figure, plot_leaderboard
from ssl_tasks.pipeline.params import parse_params
from ssl_tasks.tracking import mlflow_tracking as mt

REPO = Path(__file__).resolve().parents[2]


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_experiment_opens_on_the_model_training_view(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = mt.ensure_experiment(uri, "fresh")
    assert _client(uri).get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    old = _client(uri).create_experiment("made-before-the-tag")  # an existing store gets the tag when next used
    assert mt.ensure_experiment(uri, "made-before-the-tag") == old
    assert _client(uri).get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_run_logged_after_its_work_keeps_the_real_duration(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = mt.ensure_experiment(uri, "e")
    run = mt.start_run(uri, exp, "late", {}, {}, started=time.time() - 42.0)
    mt.finish(uri, run)
    info = _client(uri).get_run(run).info
    assert 41_000 < info.end_time - info.start_time < 60_000


def test_parent_name_says_what_was_compared() -> None:
    assert parent_name(["digits"], ["simclr", "byol"], "1c5a5e2abcdef") == "digits: simclr, byol @ 1c5a5e2"
    long = parent_name(["digits"], [f"run_{i}" for i in range(30)], "abcdef0")
    assert len(long) <= 60 and long.endswith("… @ abcdef0") and long.startswith("digits: run_0, run_1")
    edited = parent_name(["digits"], [f"run_{i}" for i in range(30)], "abcdef0", dirty=True)
    assert len(edited) <= 60 and edited.endswith("… @ abcdef0+dirty")  # tracked files differ from the commit


def _board() -> pd.DataFrame:
    return pd.DataFrame({"name": ["simclr", "raw_pixels@d"], "kind": ["ssl", "raw_pixels"],
                         "knn/top1": [0.9749, 0.9694], "knn/top1_ci95": [0.0, 0.0],
                         "perplexity/ppl": [np.nan, np.nan], "n_seeds": [1, 1]})


def test_parent_metrics_are_the_leaderboard_cells() -> None:
    assert leaderboard_metrics(_board()) == {"simclr/knn/top1": 0.9749, "raw_pixels@d/knn/top1": 0.9694}


def test_chart_axis_fits_the_data_so_small_gaps_show() -> None:
    lo, hi = axis_limits(np.array([0.95, 0.97, 0.99]), np.zeros(3))
    assert 0.9 < lo < 0.95 and 0.99 < hi <= 1.0  # a 0-1 axis would flatten these
    assert axis_limits(np.array([0.5, np.nan]), np.array([0.1, 0.0])) == pytest.approx((0.37, 0.63))  # ±0.1 error, 15% padding
    assert axis_limits(np.array([np.nan]), np.zeros(1)) == (0.0, 1.0)


def test_chart_draws_one_panel_per_protocol(tmp_path: Path) -> None:
    import matplotlib.image

    board = _board().assign(**{"linear/top1": [0.986, 0.942], "linear/top1_ci95": [0.0, 0.0]})
    plot_leaderboard(board, tmp_path / "lb.png")
    h, w = matplotlib.image.imread(tmp_path / "lb.png").shape[:2]
    plot_leaderboard(board.drop(columns=["linear/top1", "linear/top1_ci95"]), tmp_path / "one.png")
    assert matplotlib.image.imread(tmp_path / "one.png").shape[0] < h  # two panels stand taller than one


def test_chart_gives_each_dataset_its_own_y_range() -> None:
    """Two datasets far apart (digits near 0.97, clip art near 0.55): one panel per dataset and protocol, each
    y range fitted to its own dataset's values, so digits' 0.95-0.99 gaps are not flattened by clip art's 0.5s."""
    import matplotlib.pyplot as plt

    board = pd.DataFrame({"name": ["simclr", "raw_pixels@digits", "simclr_clipart", "raw_pixels@clipart"],
                          "dataset": ["digits", "digits", "clipart", "clipart"],
                          "kind": ["ssl", "raw_pixels", "ssl", "raw_pixels"],
                          "knn/top1": [0.975, 0.955, 0.58, 0.49], "knn/top1_ci95": [0.0] * 4,
                          "linear/top1": [0.985, 0.95, 0.6, 0.5], "linear/top1_ci95": [0.0] * 4})
    fig = leaderboard_figure(board)
    try:
        panels = {ax.get_title(loc="left"): ax for ax in fig.axes if ax.get_title(loc="left")}
        assert set(panels) == {f"{d}: {c}" for d in ("digits", "clipart") for c in ("knn/top1", "linear/top1")}
        for title, ax in panels.items():
            dataset, col = title.split(": ")
            values = board.loc[board["dataset"] == dataset, col]
            lo, hi = ax.get_ylim()
            assert lo < values.min() and values.max() < hi, (title, lo, hi)
            assert hi - lo < 3 * (values.max() - values.min()) + 0.03, (title, lo, hi)  # fitted, not shared
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert not labels or set(labels) == set(board.loc[board["dataset"] == dataset, "name"])
    finally:
        plt.close(fig)


def test_ui_link_compares_the_latest_pipelines_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = parse_params(_yaml(), REPO)
    layout = Layout(tmp_path)
    with pytest.raises(UserError, match="no pipeline run"):
        comparison_link(params, layout)
    uri, exp = mt.tracking_uri(tmp_path), None
    exp = mt.ensure_experiment(uri, params.tracking.experiment)
    kids = [mt.start_run(uri, exp, n, {}, {}) for n in ("a", "b")]
    for when, children in ((time.time() - 60, ["old"]), (time.time(), kids)):
        parent = mt.start_run(uri, exp, "p", {}, {"kind": "pipeline", "child_runs": ",".join(children)},
                              started=when)
        mt.finish(uri, parent)
    link = comparison_link(params, layout, "http://127.0.0.1:5123")
    assert link.startswith("http://127.0.0.1:5123/#/compare-runs?")
    query = urllib.parse.parse_qs(link.split("?", 1)[1])
    assert json.loads(query["runs"][0]) == kids and json.loads(query["experiments"][0]) == [exp]


def test_ui_link_experiment_is_the_runs_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = parse_params(_yaml(), REPO)
    with pytest.raises(UserError, match="no MLflow experiment"):
        experiment_link(params, Layout(tmp_path))
    exp = mt.ensure_experiment(mt.tracking_uri(tmp_path), params.tracking.experiment)
    assert experiment_link(params, Layout(tmp_path), "http://h:1/") == f"http://h:1/#/experiments/{exp}/runs"


@pytest.mark.slow
def test_printed_experiment_link_shows_the_runs_table_in_a_real_browser(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow 3.17 opens ``#/experiments/<id>`` on its GenAI overview (traces, tokens, cost) despite the experiment's
    kind tag; the link `ssl-tasks ui-link --experiment` prints (`make ui`'s "MLflow UI" line) shows the runs by
    name in headless Chromium against a real `mlflow ui`."""
    import subprocess
    import sys

    from browser import mlflow_ui, page_text

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bin_dir = Path(sys.executable).parent
    uri = mt.tracking_uri(tmp_path)
    exp = mt.ensure_experiment(uri, parse_params(_yaml(), REPO).tracking.experiment)
    names = ["digits: simclr, byol @ 1c5a5e2", "supervised@digits"]
    for name in names:
        mt.finish(uri, mt.start_run(uri, exp, name, {}, {}))
    with mlflow_ui(tmp_path / "mlflow" / "mlflow.db", bin_dir) as base:
        link = subprocess.run([str(bin_dir / "ssl-tasks"), "--root", str(tmp_path), "--params", str(REPO / "params.yaml"),
                               "ui-link", "--experiment", "--base", base], capture_output=True, text=True, timeout=120)
        assert link.returncode == 0, link.stderr
        text = page_text(link.stdout.strip())
    assert "Run Name" in text and all(n in text for n in names), text[:3000]  # the runs table, by run name
    assert "Total Cost" not in text and "Cost Over Time" not in text, text[:3000]  # not the GenAI overview


def _yaml() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())
