"""The ``baselines@<dataset>`` stage: the references every run is read against (random init of the encoder, the
raw input, the supervised ceiling, and any a modality adds), through the same protocols."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from ssl_tasks.core.io import atomic_dir, write_json_atomic
from ssl_tasks.core.modality import modality_of
from ssl_tasks.pipeline import runs
from ssl_tasks.pipeline.evaluate import save_subsets
from ssl_tasks.pipeline.layout import Layout, eval_context, say
from ssl_tasks.pipeline.params import Params


def baselines(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    """One MLflow run, one folder (``<kind>/``: label subsets, encoder weights) and one row per baseline: those
    :meth:`Params.baselines_for` names (``datasets.<name>.baselines``, else ``baselines.include``)."""
    say(f"baselines {params.describe_baselines(dataset)}")
    cfg = replace(params.baselines, include=params.baselines_for(dataset))
    data_dir = layout.data(dataset)
    modality = modality_of(data_dir)
    ds = modality.open(data_dir)
    ctx = eval_context(params, "baselines")
    uri, exp = runs.tracking(params, layout.root)
    rows: dict[str, Any] = {}
    with atomic_dir(layout.baselines_dir(dataset)) as tmp:
        for spec in modality.baselines(ds, cfg, params.evaluation.protocols):
            name = f"{spec.name}@{dataset}"
            torch.manual_seed(params.seed)
            started = time.time()
            result = modality.run_baseline(ctx, spec, ds, layout.tokenizer_dir(dataset), cfg, name)
            encoder = "-" if result.encoder is None else spec.encoder_name
            run_id = runs.baseline_run(uri, exp, name, spec.kind, dataset, modality.name, encoder,
                                       spec.encoder_kwargs, params.seed, layout.root, data_dir, result.metrics,
                                       started=started)
            (tmp / spec.kind).mkdir()
            save_subsets(tmp / spec.kind, result.subsets)
            if result.encoder is not None:
                torch.save(result.encoder.state_dict(), tmp / spec.kind / "encoder.pt")
            rows[name] = {"dataset": dataset, "kind": spec.kind, "objective": "-", "encoder": encoder,
                          "mlflow_run_id": run_id, "collapsed": False, "metrics": result.metrics}
    out = {"rows": rows}
    write_json_atomic(layout.eval_metrics(f"baselines-{dataset}"), out)
    return out
