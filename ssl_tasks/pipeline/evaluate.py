"""The ``evaluate@<run>`` stage: every protocol that applies, on every seed's encoder; one leaderboard row."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, write_json_atomic, write_text_atomic
from ssl_tasks.core.modality import get_modality, modality_of
from ssl_tasks.pipeline import lineage, runs
from ssl_tasks.pipeline.layout import Layout, eval_context, say
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


def reference_name(dataset: str, config: dict[str, Any], seeds: list[int]) -> str:
    """The leaderboard name of random init of ``config`` on ``dataset`` (shared by runs with the same config and
    seeds): ``random_init-<encoder>-<hash6>@<dataset>``."""
    key = json.dumps({"dataset": dataset, "seeds": sorted(seeds), **config}, sort_keys=True, default=str)
    return f"random_init-{config['encoder']}-{hashlib.sha256(key.encode()).hexdigest()[:6]}@{dataset}"


def _mean(per_seed: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for m in per_seed.values() for k in m})
    return {k: float(np.mean([m[k] for m in per_seed.values() if k in m])) for k in keys}


def evaluate(params: Params, run: str, layout: Layout) -> dict[str, Any]:
    """Every protocol on every seed's encoder, and on random init of the same configuration and seed (the run's
    fair reference); the rows hold the per-seed metrics and their mean."""
    spec = params.run(run)
    lineage.check_starts(lineage.plain_runs(params), layout.root, [run])  # not a run trained from an old start
    data_dir = layout.data(spec.dataset)
    modality = modality_of(data_dir)
    ds = modality.open(data_dir)
    ctx = eval_context(params, "evaluate")
    uri, _ = runs.tracking(params, layout.root)
    seeds = pretrained_seeds(layout.pretrain_dir(run))
    per_seed: dict[str, dict[str, float]] = {}
    reference: dict[str, dict[str, float]] = {}
    run_ids, collapsed, diverged, subsets, samples = [], False, False, {}, {}
    for seed in seeds:
        pdir = layout.pretrain_dir(run) / f"seed-{seed}"
        encoder, meta = load_encoder(pdir)
        label = run if len(seeds) == 1 else f"{run} seed {seed}"
        metrics, subsets, samples[seed] = modality.evaluate(ctx, encoder, ds, meta, pdir, label)
        torch.manual_seed(seed)  # the same initialisation the run started from
        fresh = modality.build_encoder(meta["encoder"], meta["encoder_kwargs"], meta)
        reference[str(seed)], _, _ = modality.evaluate(ctx, fresh, ds, meta, pdir, f"{label} random init", False)
        mt.log_metrics(uri, meta["mlflow_run_id"], {
            **{f"eval/{k}": v for k, v in metrics.items()},
            **{f"eval_random_init/{k}": v for k, v in reference[str(seed)].items()},
            **{f"eval_margin/{k}": metrics[k] - v for k, v in reference[str(seed)].items() if k in metrics}})
        per_seed[str(seed)] = metrics
        run_ids.append(meta["mlflow_run_id"])
        collapsed = collapsed or bool(meta["collapsed"])
        diverged = diverged or bool(meta.get("diverged"))  # meta.json before the monitor: not flagged
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
    row = {"dataset": spec.dataset, "kind": "ssl", "objective": spec.objective, "encoder": spec.encoder,
           "mlflow_run_id": run_ids[0], "mlflow_run_ids": run_ids, "collapsed": collapsed, "diverged": diverged,
           "metrics": _mean(per_seed),
           "seed_metrics": per_seed}
    out = {"rows": {run: row}}
    if any(reference.values()):  # nothing to compare on an unlabelled corpus
        config = modality.reference_config(meta)
        name = reference_name(spec.dataset, config, seeds)
        row["reference"] = name
        out["rows"][name] = {"dataset": spec.dataset, "kind": "random_init", "objective": "-",
                             "encoder": spec.encoder, "mlflow_run_id": "", "mlflow_run_ids": [], "collapsed": False,
                             "metrics": _mean(reference), "seed_metrics": reference, "config": config}
    write_json_atomic(layout.eval_metrics(f"run-{run}"), out)
    return out
