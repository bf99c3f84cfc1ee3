"""The ``evaluate@<run>`` stage: every protocol that applies, on every seed's encoder; one leaderboard row."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, write_json_atomic, write_text_atomic
from ssl_tasks.core.modality import get_modality, modality_of
from ssl_tasks.pipeline import runs
from ssl_tasks.pipeline.layout import Layout, eval_context, record_compute, say
from ssl_tasks.pipeline.params import Params
from ssl_tasks.tracking import mlflow_tracking as mt


def load_encoder(pretrain_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A pretrained encoder (``encoder.pt``, loaded with ``weights_only``) and its ``meta.json``."""
    meta = json.loads((pretrain_dir / "meta.json").read_text())
    enc = get_modality(meta["modality"]).build_encoder(meta["encoder"], meta["encoder_kwargs"], meta)
    enc.load_state_dict(torch.load(pretrain_dir / "encoder.pt", map_location="cpu", weights_only=True))
    return enc, meta


def pretrained_seeds(pretrain_dir: Path) -> list[int]:
    f = pretrain_dir / "seeds.json"
    if not f.is_file():
        raise UserError(f"{pretrain_dir} has no seeds.json: run its pretrain stage first (dvc repro)")
    return [int(s) for s in json.loads(f.read_text())["seeds"]]


def save_subsets(out: Path, subsets: dict[str, np.ndarray]) -> None:
    write_json_atomic(out / "label_subsets.json", {k: [int(i) for i in v] for k, v in subsets.items()})


def write_samples(path: Path, samples: list[str]) -> None:
    write_text_atomic(path, "\n\n".join(f"[{i}] {s.strip()}" for i, s in enumerate(samples)) + "\n")


def evaluate(params: Params, run: str, layout: Layout) -> dict[str, Any]:
    """Every protocol on every seed's encoder; the row holds the per-seed metrics and their mean."""
    spec = params.run(run)
    data_dir = layout.data(spec.dataset)
    modality = modality_of(data_dir)
    ds = modality.open(data_dir)
    ctx = eval_context(params, "evaluate")
    uri, _ = runs.tracking(params, layout.root)
    seeds = pretrained_seeds(layout.pretrain_dir(run))
    per_seed: dict[str, dict[str, float]] = {}
    run_ids, collapsed, subsets, samples = [], False, {}, {}
    for seed in seeds:
        pdir = layout.pretrain_dir(run) / f"seed-{seed}"
        encoder, meta = load_encoder(pdir)
        label = run if len(seeds) == 1 else f"{run} seed {seed}"
        t0 = time.perf_counter()
        metrics, subsets, samples[seed] = modality.evaluate(ctx, encoder, ds, meta, pdir, label)
        record_compute(f"evaluate@{label}", time.perf_counter() - t0)
        mt.log_metrics(uri, meta["mlflow_run_id"], {f"eval/{k}": v for k, v in metrics.items()})
        per_seed[str(seed)] = metrics
        run_ids.append(meta["mlflow_run_id"])
        collapsed = collapsed or bool(meta["collapsed"])
    with atomic_dir(layout.eval_dir(run)) as tmp:
        save_subsets(tmp, subsets)  # the label subsets depend on evaluation.settings.seed only
        for seed, texts in samples.items():
            if texts:
                write_samples(tmp / f"samples-seed-{seed}.txt", texts)
    for seed, rid in zip(seeds, run_ids):
        mt.log_artifact(uri, rid, layout.eval_dir(run) / "label_subsets.json", "eval")
        if samples.get(seed):
            mt.log_artifact(uri, rid, layout.eval_dir(run) / f"samples-seed-{seed}.txt", "samples")
            say(f"evaluate {run}: generated samples (seed {seed}):\n" +
                "\n".join(f"  {t.strip()[:160]}" for t in samples[seed][:3]))
    keys = sorted({k for m in per_seed.values() for k in m})
    mean = {k: float(np.mean([m[k] for m in per_seed.values() if k in m])) for k in keys}
    row = {"dataset": spec.dataset, "kind": "ssl", "objective": spec.objective, "encoder": spec.encoder,
           "mlflow_run_id": run_ids[0], "mlflow_run_ids": run_ids, "collapsed": collapsed, "metrics": mean,
           "seed_metrics": per_seed}
    out = {"rows": {run: row}}
    write_json_atomic(layout.eval_metrics(f"run-{run}"), out)
    return out
