"""Leaderboard aggregation over seeds: mean and a Student-t 95% interval, checked by hand."""

from __future__ import annotations

import math

import pytest

from ssl_tasks.pipeline.leaderboard import build_leaderboard, mean_ci95, to_markdown
from ssl_tasks.pipeline.params import EvaluationParams, parse_params


def test_mean_ci95_matches_hand_computation() -> None:
    vals = [0.80, 0.82, 0.84]
    mean, half = mean_ci95(vals)
    sd = math.sqrt(sum((v - 0.82) ** 2 for v in vals) / 2)  # 0.02
    assert mean == pytest.approx(0.82)
    assert half == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)  # t(0.975, df=2) = 4.3027
    assert mean_ci95([0.5]) == (0.5, 0.0)


def _row(seed_metrics: dict[str, dict[str, float]] | None, metrics: dict[str, float]) -> dict:
    r = {"dataset": "d", "kind": "ssl", "objective": "simclr", "encoder": "small_cnn", "mlflow_run_id": "a",
         "collapsed": False, "metrics": metrics}
    if seed_metrics is not None:
        r |= {"seed_metrics": seed_metrics, "mlflow_run_ids": ["a", "b", "c"][: len(seed_metrics)]}
    return r


def test_leaderboard_rows_carry_mean_interval_and_seed_count() -> None:
    seeds = {"0": {"knn/top1": 0.80}, "1": {"knn/top1": 0.82}, "2": {"knn/top1": 0.84}}
    rows = {"simclr": _row(seeds, {"knn/top1": 0.82}),
            "random_init@d": {**_row(None, {"knn/top1": 0.7}), "kind": "random_init"}}
    df = build_leaderboard(rows, ["knn"])
    r = df.set_index("name").loc["simclr"]
    assert r["n_seeds"] == 3 and r["knn/top1"] == pytest.approx(0.82)
    assert r["knn/top1_ci95"] == pytest.approx(mean_ci95([0.8, 0.82, 0.84])[1])
    assert r["mlflow_run_id"] == "a,b,c"
    b = df.set_index("name").loc["random_init@d"]
    assert b["n_seeds"] == 1 and b["knn/top1_ci95"] == 0.0
    md = to_markdown(df, EvaluationParams())
    assert "0.8200 ± 0.0497" in md and "| seeds |" in md and "| 0.7000 |" in md


def test_seeds_param_validation() -> None:
    base = {"datasets": {"d": {"source": "sklearn_digits"}}, "runs": {"r": {"dataset": "d", "objective": "simclr"}}}
    assert parse_params({**base, "seeds": [1, 2]}).seeds_for("r") == (1, 2)
    assert parse_params(base).seeds_for("r") == (0,)
    with_run = {**base, "runs": {"r": {"dataset": "d", "objective": "simclr", "seeds": [5]}}, "seeds": [1, 2]}
    assert parse_params(with_run).seeds_for("r") == (5,)
    from ssl_tasks.core.errors import UserError

    for bad in ([], [1, 1]):
        with pytest.raises(UserError, match="non-empty list of distinct"):
            parse_params({**base, "seeds": bad})
    with pytest.raises(UserError, match="seeds"):
        parse_params({**base, "seeds": "three"})


def test_each_run_states_its_paired_margin_over_random_init_of_its_own_encoder() -> None:
    run = {"0": {"knn/top1": 0.80, "linear/top1": 0.90}, "1": {"knn/top1": 0.84, "linear/top1": 0.86}}
    ref = {"0": {"knn/top1": 0.70, "linear/top1": 0.85}, "1": {"knn/top1": 0.78, "linear/top1": 0.86}}
    rows = {"a": {**_row(run, {}), "reference": "random_init-x@d"},
            "b": {**_row({"0": {"knn/top1": 0.5}}, {}), "reference": "random_init-y@d"},
            "random_init-x@d": {**_row(ref, {}), "kind": "random_init", "mlflow_run_ids": []},
            "random_init-y@d": {**_row({"0": {"knn/top1": 0.6}}, {}), "kind": "random_init", "mlflow_run_ids": []}}
    df = build_leaderboard(rows, ["knn", "linear"]).set_index("name")
    assert df.loc["a", "knn/top1 margin"] == pytest.approx(((0.80 - 0.70) + (0.84 - 0.78)) / 2)  # paired by seed
    assert df.loc["a", "knn/top1 margin_ci95"] == pytest.approx(mean_ci95([0.10, 0.06])[1])
    assert df.loc["a", "linear/top1 margin"] == pytest.approx(((0.90 - 0.85) + (0.86 - 0.86)) / 2)
    assert df.loc["b", "knn/top1 margin"] == pytest.approx(-0.1)  # a run below its reference says so
    assert df.loc["b", "linear/top1 margin"] is None or math.isnan(df.loc["b", "linear/top1 margin"])
    assert df.loc["random_init-x@d", "reference"] == ""
    md = to_markdown(df.reset_index(), EvaluationParams())
    assert "| a | random_init-x@d | +0.0800 ± " in md and "| b | random_init-y@d | -0.1000 | - |" in md


def test_finetune_column_sits_beside_its_equal_budget_random_init_row() -> None:
    """``finetune/top1`` of each run, the same column of its random-init row and the paired margin, in one table;
    the protocol's note says the reference had the identical budget. Without the protocol nothing changes."""
    run = {"0": {"knn/top1": 0.80, "finetune/top1": 0.91}, "1": {"knn/top1": 0.84, "finetune/top1": 0.93}}
    ref = {"0": {"knn/top1": 0.70, "finetune/top1": 0.90}, "1": {"knn/top1": 0.78, "finetune/top1": 0.90}}
    rows = {"a": {**_row(run, {}), "reference": "random_init-x@d"},
            "random_init-x@d": {**_row(ref, {}), "kind": "random_init", "mlflow_run_ids": []},
            "raw_pixels@d": {**_row(None, {"knn/top1": 0.6, "finetune/top1": 0.85}), "kind": "raw_pixels"}}
    df = build_leaderboard(rows, ["knn", "finetune"])
    assert "finetune/top1" in df.columns
    assert df.set_index("name").loc["a", "finetune/top1 margin"] == pytest.approx(0.02)
    settings = parse_params({"datasets": {"d": {"source": "sklearn_digits"}},
                             "runs": {"r": {"dataset": "d", "objective": "simclr"}},
                             "evaluation": {"protocols": ["knn", "finetune"], "settings": {"finetune_epochs": 7}}})
    md = to_markdown(df, settings.evaluation)
    ci_a, ci_ref = mean_ci95([0.91, 0.93])[1], mean_ci95([0.90, 0.90])[1]
    assert (f"| a | 0.9200 ± {ci_a:.4f} | random_init-x@d | 0.9000 ± {ci_ref:.4f} | "
            f"+0.0200 ± {mean_ci95([0.01, 0.03])[1]:.4f} |") in md
    assert "what pretraining bought" in md and "(7 epochs," in md and "identical budget" in md
    plain = to_markdown(build_leaderboard({k: r for k, r in rows.items()}, ["knn"]), EvaluationParams())
    assert "finetune" not in plain  # the default protocols: the table is as before
