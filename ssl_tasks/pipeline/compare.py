"""The ``compare`` stage: the leaderboard (csv, md, png) from every evaluated run and baseline, and one MLflow
parent run that adopts them."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import write_text_atomic
from ssl_tasks.pipeline import runs
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.params import Params
from ssl_tasks.tracking import mlflow_tracking as mt


def compare(params: Params, layout: Layout) -> Any:
    from ssl_tasks.pipeline.leaderboard import build_leaderboard, plot_leaderboard, to_markdown

    sources = [layout.eval_metrics(f"run-{r}") for r in params.runs]
    used = sorted({r.dataset for r in params.runs.values()})
    sources += [layout.eval_metrics(f"baselines-{d}") for d in used]
    rows: dict[str, Any] = {}
    for path in sources:
        if not path.is_file():
            raise UserError(f"missing evaluation result {path}: run its stage first (dvc repro)")
        rows.update(json.loads(path.read_text())["rows"])
    table = build_leaderboard(rows, params.evaluation.protocols)
    csv, md, png = layout.leaderboard("csv"), layout.leaderboard("md"), layout.leaderboard("png")
    write_text_atomic(csv, table.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(md, to_markdown(table, params.evaluation))
    plot_leaderboard(table, png)
    uri, exp = runs.tracking(params, layout.root)
    parent = mt.start_run(uri, exp, f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
                          {"runs": ",".join(params.runs), "datasets": ",".join(used),
                           "protocols": ",".join(params.evaluation.protocols)},
                          {"kind": "pipeline", "git_commit": runs.git_commit(layout.root),
                           "prefect_flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID", "")})
    children = [rid for row in rows.values() for rid in row.get("mlflow_run_ids", [row["mlflow_run_id"]])]
    adopted = runs.adopt(uri, parent, children)
    for p in (csv, md, png):
        mt.log_artifact(uri, parent, p, "leaderboard")
    mt.set_tags(uri, parent, {"reused_child_runs": ",".join(r for r in children if r not in adopted)})
    mt.finish(uri, parent)
    print("\nLeaderboard (top-1 accuracy on the test split; every column names its protocol)\n")
    print(to_markdown(table, params.evaluation))
    print(f"written: {csv}, {md}, {png}; MLflow parent run {parent}")
    return table
