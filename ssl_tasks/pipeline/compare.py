"""The ``compare`` stage: the leaderboard (csv, md, png) from every evaluated run and baseline, and one MLflow
parent run that adopts them."""

from __future__ import annotations

import json
import os
from typing import Any

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import write_text_atomic
from ssl_tasks.pipeline import lineage, runs
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.params import Params
from ssl_tasks.tracking import mlflow_tracking as mt


def compare(params: Params, layout: Layout) -> Any:
    from ssl_tasks.pipeline.leaderboard import build_leaderboard, plot_leaderboard, to_markdown

    lineage.check_starts(lineage.plain_runs(params), layout.root)  # no row of a run trained from an old start
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
    runs.close_orphans(uri, exp)  # runs of stages killed earlier (a compare killed midway left its parent open)
    git = runs.git_tags(layout.root)
    parent = mt.start_run(uri, exp, parent_name(used, list(params.runs), git["git_commit"], git["git_dirty"] == "true"),
                          {"runs": ",".join(params.runs), "datasets": ",".join(used),
                           "protocols": ",".join(params.evaluation.protocols)},
                          {"kind": "pipeline", **git,
                           "prefect_flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID", "")})
    children = [rid for row in rows.values() for rid in row.get("mlflow_run_ids", [row["mlflow_run_id"]])]
    adopted = runs.adopt(uri, parent, children)
    mt.log_metrics(uri, parent, leaderboard_metrics(table))
    for p in (csv, md, png):
        mt.log_artifact(uri, parent, p, "leaderboard")
    mt.set_tags(uri, parent, {"reused_child_runs": ",".join(r for r in children if r not in adopted),
                              "child_runs": ",".join(children)})
    mt.finish(uri, parent)
    print("\nLeaderboard (top-1 accuracy on the test split; every column names its protocol)\n")
    print(to_markdown(table, params.evaluation))
    print("Baselines per dataset (each run is also read against random init of its own encoder):")
    for d in used:
        print(f"  {params.describe_baselines(d)}")
    print(f"written: {csv}, {md}, {png}; MLflow parent run {parent}")
    print(f"compare the runs in MLflow (after `make ui`): {mt.ui_compare_url(UI_BASE, exp, children)}")
    return table


UI_BASE = "http://127.0.0.1:5000"  # where `make ui` serves the MLflow UI by default


def comparison_link(params: Params, layout: Layout, base: str = UI_BASE) -> str:
    """The MLflow UI link that compares the runs of the latest ``compare`` (``ssl-tasks ui-link``; `make ui`)."""
    uri = mt.tracking_uri(layout.root)
    parent = mt.latest_run(uri, params.tracking.experiment, {"kind": "pipeline"})
    if parent is None:
        raise UserError(f"no pipeline run in MLflow experiment {params.tracking.experiment!r} yet: run `make run` "
                        "(or dvc repro) first")
    children = [c for c in parent.data.tags.get("child_runs", "").split(",") if c]
    exp = parent.info.experiment_id
    return mt.ui_compare_url(base, exp, children) if children else mt.ui_runs_url(base, exp)


def experiment_link(params: Params, layout: Layout, base: str = UI_BASE) -> str:
    """The MLflow UI link to the experiment's runs table (``ssl-tasks ui-link --experiment``; `make ui`)."""
    exp = mt.experiment_id(mt.tracking_uri(layout.root), params.tracking.experiment)
    if exp is None:
        raise UserError(f"no MLflow experiment {params.tracking.experiment!r} yet: run `make run` (or dvc repro) "
                        "first")
    return mt.ui_runs_url(base, exp)


def parent_name(datasets: list[str], run_names: list[str], commit: str, dirty: bool = False, width: int = 60) -> str:
    """The parent run's name says what it compared: ``digits: simclr, byol, moco_v2 @ 1c5a5e2``, and
    ``@ 1c5a5e2+dirty`` when tracked files (params.yaml, code) differ from that commit."""
    tail = f" @ {commit[:7]}" + ("+dirty" if dirty else "")
    head = f"{', '.join(datasets)}: "
    body = ", ".join(run_names)
    room = width - len(head) - len(tail)
    if len(body) > room:
        body = body[: max(0, room - 1)].rstrip(", ") + "…"
    return head + body + tail


def leaderboard_metrics(table: Any) -> dict[str, float]:
    """Every leaderboard cell as an MLflow metric of the parent run, ``<row>/<protocol>/<metric>``, so the
    comparison shows in MLflow's chart and table views without expanding the children."""
    from ssl_tasks.pipeline.leaderboard import metric_columns

    out: dict[str, float] = {}
    for _, r in table.iterrows():
        for c in metric_columns(table.columns):
            v = r[c]
            if v is not None and v == v:  # not NaN
                out[f"{r['name']}/{c}"] = float(v)
    return out
