"""The pipeline's stage functions. ``dvc.yaml`` calls them through the CLI; so does Prefect.

Each stage reads params, does one job, writes its outputs atomically and logs to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_tasks.core.config import to_dict
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, write_json_atomic
from ssl_tasks.data.ingest import ingest as ingest_source
from ssl_tasks.data.shards import ImageDataset
from ssl_tasks.evaluation.protocols import evaluate_encoder
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.views import ImageViews
from ssl_tasks.pipeline.params import Params
from ssl_tasks.tracking import mlflow_tracking as mt
from ssl_tasks.training.config import TrainJob
from ssl_tasks.training.loop import channel_stats


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes, relative to the project (or workspace) root."""

    root: Path

    def data(self, ds: str) -> Path:
        return self.root / "data" / ds

    def validation_report(self, ds: str) -> Path:
        return self.root / "reports" / "validate" / f"{ds}.json"

    def validation_docs(self, ds: str) -> Path:
        return self.root / "reports" / "validate" / f"{ds}_docs"

    def pretrain_dir(self, run: str) -> Path:
        return self.root / "artifacts" / "runs" / run / "pretrain"

    def eval_dir(self, run: str) -> Path:
        return self.root / "artifacts" / "runs" / run / "eval"

    def baselines_dir(self, ds: str) -> Path:
        return self.root / "artifacts" / "baselines" / ds

    def eval_metrics(self, name: str) -> Path:
        return self.root / "metrics" / "eval" / f"{name}.json"

    def leaderboard(self, ext: str) -> Path:
        return self.root / "artifacts" / f"leaderboard.{ext}"

    @property
    def ray_storage(self) -> Path:
        return self.root / "artifacts" / ".ray"


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def record_compute(stage: str, seconds: float) -> None:
    """Append the stage's compute time to $SSL_TASKS_TIMING_LOG (bench/overhead.py sets it)."""
    path = os.environ.get("SSL_TASKS_TIMING_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": stage, "compute_s": round(seconds, 3)}) + "\n")


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(data_dir: Path) -> str:
    """sha256 of the manifest, which holds every shard's sha256: the dataset's version."""
    return hashlib.sha256((Path(data_dir) / "manifest.json").read_bytes()).hexdigest()


def _tracking(params: Params, root: Path) -> tuple[str, str]:
    uri = mt.tracking_uri(root)
    return uri, mt.ensure_experiment(uri, params.tracking.experiment)


# ----------------------------------------------------------------------------- ingest / validate


def ingest(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    d = params.dataset(dataset)
    say(f"ingest {dataset}: source={d.source} path={d.path}")
    t0 = time.perf_counter()
    manifest = ingest_source(d.source, d.path, layout.data(dataset), test_fraction=d.test_fraction,
                             split_seed=d.split_seed, shard_size=d.shard_size)
    record_compute(f"ingest@{dataset}", time.perf_counter() - t0)
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    say(f"ingest {dataset}: wrote {layout.data(dataset)} {counts} shape={manifest['image_shape']}")
    return manifest


def validate(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    from ssl_tasks.validation import validate_dataset

    say(f"validate {dataset}: running the Great Expectations suite ...")
    t0 = time.perf_counter()
    report = validate_dataset(layout.data(dataset), layout.validation_report(dataset), layout.validation_docs(dataset),
                              params.dataset(dataset).validation)
    record_compute(f"validate@{dataset}", time.perf_counter() - t0)
    say(f"validate {dataset}: {report['n_expectations']} expectations passed")
    return report


# ----------------------------------------------------------------------------- pretrain


def _job_key(job: TrainJob) -> str:
    d = asdict(job)
    d.pop("tracking"), d.pop("fault")
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretrain(params: Params, run: str, layout: Layout) -> Path:
    """Pretrain one run on Ray Train; write encoder.pt, meta.json, history.json atomically."""
    from ssl_tasks.training.ray_runner import fit

    spec, train = params.run(run), params.train_for(run)
    data_dir = layout.data(spec.dataset)
    ds = ImageDataset(data_dir)
    mean, std = channel_stats(ds)
    job = TrainJob(run=run, seed=params.seed, data_dir=str(data_dir.resolve()), objective=spec.objective,
                   objective_kwargs=spec.objective_kwargs, encoder=spec.encoder, encoder_kwargs=spec.encoder_kwargs,
                   train=train, mean=mean, std=std)
    name = f"{run}-{_job_key(job)}"
    storage = layout.ray_storage
    uri, exp = _tracking(params, layout.root)
    run_id = _resume_or_start_run(uri, exp, storage / f"{name}.mlflow.json", run, params, train, spec, data_dir, layout)
    fault = json.loads(os.environ["SSL_TASKS_FAULT"]) if os.environ.get("SSL_TASKS_FAULT") else {}
    job = TrainJob(**{**asdict(job), "train": train, "tracking": {"uri": uri, "run_id": run_id}, "fault": fault})
    say(f"pretrain {run}: {spec.objective} + {spec.encoder} on {spec.dataset}, {train.epochs} epochs, "
        f"{train.num_workers} Ray worker(s){' on GPU' if train.use_gpu else ''}")
    try:
        state = fit(job, storage_dir=storage, name=name, address=params.ray.address)
    except BaseException:
        mt.finish(uri, run_id, "FAILED")
        raise
    history = json.loads(state["history"])
    record_compute(f"pretrain@{run}", sum(r["train/epoch_time_s"] for r in history))
    c, h, w = ds.image_shape
    meta = {"run": run, "dataset": spec.dataset, "objective": spec.objective, "encoder": spec.encoder,
            "encoder_kwargs": spec.encoder_kwargs, "channels": c, "image_size": min(h, w), "mean": list(mean),
            "std": list(std), "label_names": ds.label_names, "mlflow_run_id": run_id, "data_hash": data_hash(data_dir),
            "epochs": train.epochs, "collapsed": any(r.get("monitor/collapsed") for r in history)}
    out = layout.pretrain_dir(run)
    with atomic_dir(out) as tmp:
        torch.save(state["eval_encoder"], tmp / "encoder.pt")
        write_json_atomic(tmp / "meta.json", meta)
        write_json_atomic(tmp / "history.json", history)
        _plot_history(history, tmp / "history.png", run)
    mt.log_artifact(uri, run_id, out / "encoder.pt", "checkpoint")
    mt.log_artifact(uri, run_id, out / "meta.json", "checkpoint")
    mt.log_artifact(uri, run_id, out / "history.png", "plots")
    mt.set_tags(uri, run_id, {"collapsed": str(meta["collapsed"]).lower()})
    mt.finish(uri, run_id)
    (storage / f"{name}.mlflow.json").unlink(missing_ok=True)
    say(f"pretrain {run}: done, final loss {history[-1]['train/loss']:.4f}; wrote {out}")
    return out


def _resume_or_start_run(uri: str, exp: str, marker: Path, run: str, params: Params, train: Any, spec: Any,
                         data_dir: Path, layout: Layout) -> str:
    """Reuse the MLflow run of an interrupted attempt at the same job, else start one."""
    if marker.is_file():
        run_id = json.loads(marker.read_text())["run_id"]
        if mt.run_exists(uri, run_id):
            return run_id
    tags = {"objective": spec.objective, "dataset": spec.dataset, "encoder": spec.encoder, "modality": "image",
            "kind": "ssl", "git_commit": git_commit(layout.root), "data_hash": data_hash(data_dir)}
    p = {"run": run, "seed": params.seed, "objective": spec.objective, "encoder": spec.encoder,
         "encoder_kwargs": spec.encoder_kwargs, "objective_kwargs": spec.objective_kwargs, "train": to_dict(train),
         "dataset": spec.dataset}
    run_id = mt.start_run(uri, exp, run, p, tags)
    write_json_atomic(marker, {"run_id": run_id})
    return run_id


def _plot_history(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("train/loss", "loss"), ("monitor/embedding_std", "embedding std (x sqrt D)"),
            ("monitor/effective_rank", "effective rank"), ("monitor/uniformity", "uniformity")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    ep = [r["epoch"] for r in history]
    for ax, (k, label) in zip(axes, keys):
        ax.plot(ep, [r.get(k, float("nan")) for r in history], marker="o", ms=3)
        ax.set_title(label)
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- evaluate


def load_encoder(pretrain_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    meta = json.loads((pretrain_dir / "meta.json").read_text())
    enc = build_encoder(meta["encoder"], meta["channels"], meta["image_size"], **meta["encoder_kwargs"])
    enc.load_state_dict(torch.load(pretrain_dir / "encoder.pt", map_location="cpu", weights_only=True))
    return enc, meta


def _run_protocols(params: Params, encoder: torch.nn.Module | None, ds: ImageDataset, mean: Any, std: Any,
                   label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    c, h, w = ds.image_shape
    views = ImageViews(params.evaluation.finetune_views, torch.tensor(mean), torch.tensor(std), min(h, w))
    t0 = time.perf_counter()
    metrics, subsets = evaluate_encoder(
        encoder, ds.load("train"), ds.load("test"), num_classes=ds.num_classes, mean=mean, std=std,
        protocols=params.evaluation.protocols, cfg=params.evaluation.settings, finetune_views=views,
        device="cuda" if torch.cuda.is_available() else "cpu",
        progress=lambda line: say(f"evaluate {label}: {line}"),
    )  # fmt: skip
    dt = time.perf_counter() - t0
    record_compute(f"evaluate@{label}", dt)
    say(f"evaluate {label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f" ({dt:.0f} s)")
    return metrics, subsets


def _save_subsets(out: Path, subsets: dict[str, np.ndarray]) -> None:
    write_json_atomic(out / "label_subsets.json", {k: [int(i) for i in v] for k, v in subsets.items()})


def evaluate(params: Params, run: str, layout: Layout) -> dict[str, Any]:
    spec = params.run(run)
    encoder, meta = load_encoder(layout.pretrain_dir(run))
    ds = ImageDataset(layout.data(spec.dataset))
    metrics, subsets = _run_protocols(params, encoder, ds, meta["mean"], meta["std"], run)
    uri, _ = _tracking(params, layout.root)
    run_id = meta["mlflow_run_id"]
    with atomic_dir(layout.eval_dir(run)) as tmp:
        _save_subsets(tmp, subsets)
    mt.log_metrics(uri, run_id, {f"eval/{k}": v for k, v in metrics.items()})
    mt.log_artifact(uri, run_id, layout.eval_dir(run) / "label_subsets.json", "eval")
    row = {"dataset": spec.dataset, "kind": "ssl", "objective": spec.objective, "encoder": spec.encoder,
           "mlflow_run_id": run_id, "collapsed": meta["collapsed"], "metrics": metrics}
    out = {"rows": {run: row}}
    write_json_atomic(layout.eval_metrics(f"run-{run}"), out)
    return out


# ----------------------------------------------------------------------------- baselines


def baselines(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    """Random-init encoder, raw pixels and the supervised ceiling through the same protocols."""
    from ssl_tasks.training.supervised import train_supervised

    b = params.baselines
    ds = ImageDataset(layout.data(dataset))
    mean, std = channel_stats(ds)
    c, h, w = ds.image_shape
    uri, exp = _tracking(params, layout.root)
    rows: dict[str, Any] = {}
    out_dir = layout.baselines_dir(dataset)
    with atomic_dir(out_dir) as tmp:
        for kind in b.include:
            name = f"{kind}@{dataset}"
            torch.manual_seed(params.seed)
            encoder = None if kind == "raw_pixels" else build_encoder(b.encoder, c, min(h, w), **b.encoder_kwargs)
            if kind == "supervised":
                x, y = ds.load("train")
                views = ImageViews(params.evaluation.finetune_views, torch.tensor(mean), torch.tensor(std), min(h, w))
                say(f"baselines {dataset}: supervised training of {b.encoder} for {b.supervised_epochs} epochs")
                t0 = time.perf_counter()
                train_supervised(encoder, x, y, num_classes=ds.num_classes, views=views, epochs=b.supervised_epochs,
                                 lr=b.supervised_lr, batch_size=params.train.batch_size, seed=params.seed,
                                 log=lambda s: say(f"baselines {dataset}: {s}"))
                record_compute(f"supervised@{dataset}", time.perf_counter() - t0)
            metrics, subsets = _run_protocols(params, encoder, ds, mean, std, name)
            encoder_name = "-" if encoder is None else b.encoder
            tags = {"kind": "baseline", "baseline": kind, "dataset": dataset, "encoder": encoder_name,
                    "modality": "image", "git_commit": git_commit(layout.root), "data_hash": data_hash(ds.root)}
            run_id = mt.start_run(uri, exp, name, {"baseline": kind, "encoder": encoder_name, "seed": params.seed,
                                                   "encoder_kwargs": b.encoder_kwargs}, tags)
            mt.log_metrics(uri, run_id, {f"eval/{k}": v for k, v in metrics.items()})
            (tmp / kind).mkdir()
            _save_subsets(tmp / kind, subsets)
            if encoder is not None:
                torch.save(encoder.state_dict(), tmp / kind / "encoder.pt")
            mt.finish(uri, run_id)
            rows[name] = {"dataset": dataset, "kind": kind, "objective": "-", "encoder": encoder_name,
                          "mlflow_run_id": run_id, "collapsed": False, "metrics": metrics}
    out = {"rows": rows}
    write_json_atomic(layout.eval_metrics(f"baselines-{dataset}"), out)
    return out


# ----------------------------------------------------------------------------- compare


def compare(params: Params, layout: Layout) -> Any:
    """Leaderboard (csv, md, png) from every evaluated run and baseline; one MLflow parent run."""
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
    from ssl_tasks.core.io import write_text_atomic

    write_text_atomic(csv, table.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(md, to_markdown(table, params.evaluation))
    plot_leaderboard(table, png)
    uri, exp = _tracking(params, layout.root)
    parent = mt.start_run(uri, exp, f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
                          {"runs": ",".join(params.runs), "datasets": ",".join(used),
                           "protocols": ",".join(params.evaluation.protocols)},
                          {"kind": "pipeline", "git_commit": git_commit(layout.root),
                           "prefect_flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID", "")})
    adopted = []
    for row in rows.values():
        rid = row["mlflow_run_id"]
        if mt.run_exists(uri, rid) and mt.parent_of(uri, rid) is None:
            mt.set_tags(uri, rid, {"mlflow.parentRunId": parent})
            adopted.append(rid)
    for p in (csv, md, png):
        mt.log_artifact(uri, parent, p, "leaderboard")
    mt.set_tags(uri, parent, {"reused_child_runs": ",".join(r["mlflow_run_id"] for r in rows.values()
                                                            if r["mlflow_run_id"] not in adopted)})
    mt.finish(uri, parent)
    print("\nLeaderboard (top-1 accuracy on the test split; every column names its protocol)\n")
    print(to_markdown(table, params.evaluation))
    print(f"written: {csv}, {md}, {png}; MLflow parent run {parent}")
    return table
