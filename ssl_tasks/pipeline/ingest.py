"""The ``ingest@<dataset>`` and ``validate@<dataset>`` stages: a source into shards, then the GX suite."""

from __future__ import annotations

from typing import Any

from ssl_tasks.data.ingest import ingest as ingest_source
from ssl_tasks.pipeline.layout import Layout, say
from ssl_tasks.pipeline.params import Params


def ingest(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    d = params.dataset(dataset)
    say(f"ingest {dataset}: source={d.source} path={d.path}")
    manifest = ingest_source(d.source, d.path, layout.data(dataset), test_fraction=d.test_fraction,
                             split_seed=d.split_seed, shard_size=d.shard_size, options=d.options)
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    shape = f" shape={manifest['image_shape']}" if "image_shape" in manifest else f" ({manifest['modality']})"
    say(f"ingest {dataset}: wrote {layout.data(dataset)} {counts}{shape}")
    return manifest


def validate(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    from ssl_tasks.validation import validate_dataset

    say(f"validate {dataset}: running the Great Expectations suite ...")
    report = validate_dataset(layout.data(dataset), layout.validation_report(dataset), layout.validation_docs(dataset),
                              params.dataset(dataset).validation)
    warned = report.get("warnings", [])
    say(f"validate {dataset}: {report['n_expectations'] - len(warned)} expectations passed"
        + (f", {len(warned)} warning{'s' * (len(warned) > 1)} (datasets.{dataset}.validation sets the thresholds; "
           "docs/your-data.md)" if warned else ""))
    for w in warned:
        say(f"validate {dataset}: warning: {w}")
    return report
