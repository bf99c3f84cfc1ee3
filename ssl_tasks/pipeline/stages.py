"""The pipeline's stage functions. ``dvc.yaml`` calls them through the CLI; so does Prefect.

Each stage reads params, does one job, writes its outputs atomically and logs to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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
from ssl_tasks.data.datasets import dataset_modality, open_dataset
from ssl_tasks.data.ingest import ingest as ingest_source
from ssl_tasks.data.shards import ImageDataset
from ssl_tasks.evaluation.protocols import PROTOCOLS, evaluate_encoder
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.views import ImageViews
from ssl_tasks.objectives import OBJECTIVES, DataSpec
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

    def tokenizer_dir(self, ds: str) -> Path:
        return self.root / "artifacts" / "tokenizers" / ds

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
                             split_seed=d.split_seed, shard_size=d.shard_size, options=d.options)
    record_compute(f"ingest@{dataset}", time.perf_counter() - t0)
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    shape = f" shape={manifest['image_shape']}" if "image_shape" in manifest else f" ({manifest['modality']})"
    say(f"ingest {dataset}: wrote {layout.data(dataset)} {counts}{shape}")
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


# ----------------------------------------------------------------------------- tokenizer


def tokenizer(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    """The dataset's tokenizer: byte-level BPE for text (every text run reads it), k-means visual tokens for
    images (BEiT's targets). Writes tokenizer.json / tokenizer.pt + summary.json atomically."""
    from ssl_tasks.modalities.image.visual_tokenizer import train_tokenizer

    t = params.dataset(dataset).tokenizer_params()
    if dataset_modality(layout.data(dataset)) in ("text", "image_text"):  # image-text: over the captions
        from ssl_tasks.pipeline.text_stages import train_tokenizer_stage

        say(f"tokenizer {dataset}: byte-level BPE, vocabulary {t.vocab_size}, {t.num_sentinels} sentinels")
        summary = train_tokenizer_stage(layout.data(dataset), layout.tokenizer_dir(dataset), t)
        record_compute(f"tokenizer@{dataset}", summary["seconds"])
        say(f"tokenizer {dataset}: {summary['vocab_size']} tokens from {summary['texts']} texts, "
            f"{summary['mean_tokens_per_text']} tokens per text on average ({summary['seconds']:.1f} s); "
            f"wrote {layout.tokenizer_dir(dataset)}")
        return summary
    say(f"tokenizer {dataset}: k-means, {t.num_codes} codes over {t.patch_size}x{t.patch_size} patches "
        f"(up to {t.max_patches} patches)")
    out = layout.tokenizer_dir(dataset)
    with atomic_dir(out) as tmp:
        summary = train_tokenizer(layout.data(dataset), tmp / "tokenizer.pt", patch_size=t.patch_size,
                                  num_codes=t.num_codes, seed=t.seed, max_patches=t.max_patches)
        write_json_atomic(tmp / "summary.json", summary)
    record_compute(f"tokenizer@{dataset}", summary["seconds"])
    say(f"tokenizer {dataset}: {summary['codes_used']}/{summary['num_codes']} codes used, "
        f"mean distance {summary['inertia']:.3f} ({summary['seconds']:.1f} s); wrote {out}")
    return summary


def objective_kwargs(params: Params, run: str, layout: Layout) -> dict[str, Any]:
    """The run's objective kwargs, with the dataset's tokenizer filled in for objectives that read one."""
    spec = params.run(run)
    kwargs = dict(spec.objective_kwargs)
    if OBJECTIVES.get(spec.objective).needs_tokenizer:
        path = Path(kwargs.get("tokenizer") or layout.tokenizer_dir(spec.dataset) / "tokenizer.pt")
        kwargs["tokenizer"] = str((path if path.is_absolute() else layout.root / path).resolve())
    if kwargs.get("init_image"):  # LiT: a pretrained image tower
        kwargs["init_image"] = _pretrained_file(kwargs["init_image"], f"runs.{run}.objective_kwargs.init_image", layout)
    return kwargs


def _pretrained_file(value: str, key: str, layout: Layout) -> str:
    """A params path to an earlier run's encoder.pt, relative to the project, as an absolute path that exists."""
    path = Path(value)
    path = (path if path.is_absolute() else layout.root / path).resolve()
    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist (pretrain that run first)")
    return str(path)


# ----------------------------------------------------------------------------- pretrain


def _job_key(job: TrainJob) -> str:
    d = asdict(job)
    d.pop("tracking"), d.pop("fault")
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretrain(params: Params, run: str, layout: Layout) -> Path:
    """Pretrain one run on Ray Train, once per seed; write ``seed-<s>/`` (encoder.pt, meta.json, history) atomically.

    A seed that finished is kept under the Ray storage folder until every seed has, so a stage killed
    during seed k resumes there instead of retraining seeds before it.
    """
    spec, seeds = params.run(run), params.seeds_for(run)
    data_dir = layout.data(spec.dataset)
    if dataset_modality(data_dir) == "text":
        from ssl_tasks.data.text_shards import TextDataset

        ds: Any = TextDataset(data_dir)
        mean, std = (), ()
    else:
        ds = open_dataset(data_dir)  # images, or the images of an image-text dataset
        c, h, w = ds.image_shape
        OBJECTIVES.get(spec.objective).check_data(DataSpec(channels=c, image_size=min(h, w), mean=(), std=()))
        mean, std = channel_stats(ds)
    done: dict[int, Path] = {}
    for i, seed in enumerate(seeds):
        label = run if len(seeds) == 1 else f"{run} seed {seed} ({i + 1}/{len(seeds)})"
        done[seed] = _pretrain_seed(params, run, seed, label, layout, ds, mean, std)
    out = layout.pretrain_dir(run)
    with atomic_dir(out) as tmp:
        for seed, src in done.items():
            shutil.copytree(src, tmp / f"seed-{seed}")
        write_json_atomic(tmp / "seeds.json", {"seeds": list(seeds)})
    for src in done.values():
        shutil.rmtree(src, ignore_errors=True)
    say(f"pretrain {run}: wrote {out} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    return out


def train_job(params: Params, run: str, seed: int, layout: Layout, data_dir: Path, mean: tuple[float, ...],
              std: tuple[float, ...], tokenizer_file: Path | None = None) -> TrainJob:
    """The training job a pretrain stage hands to Ray Train for ``run`` and ``seed`` (no tracking, no faults)."""
    spec = params.run(run)
    # a pretrained start (e.g. SimCSE from an MLM run)
    init = _pretrained_file(spec.init_encoder, f"runs.{run}.init_encoder", layout) if spec.init_encoder else ""
    return TrainJob(run=run, seed=seed, data_dir=str(Path(data_dir).resolve()), objective=spec.objective,
                    objective_kwargs=objective_kwargs(params, run, layout), encoder=spec.encoder,
                    encoder_kwargs=spec.encoder_kwargs, train=params.train_for(run), mean=mean, std=std,
                    tokenizer=str(tokenizer_file or ""), init_encoder=init)


def _pretrain_seed(params: Params, run: str, seed: int, label: str, layout: Layout, ds: Any,
                   mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    from ssl_tasks.training.ray_runner import fit

    spec, train = params.run(run), params.train_for(run)
    data_dir = ds.root
    text = ds.modality == "text"
    from ssl_tasks.pipeline.pair_stages import trains_two_towers

    two_tower = trains_two_towers(spec.objective, ds.modality)
    with_tok = text or two_tower  # the run reads the dataset's BPE tokenizer and keeps a copy with its weights
    tokenizer_file = (layout.tokenizer_dir(spec.dataset) / "tokenizer.json").resolve() if with_tok else None
    if with_tok and not tokenizer_file.is_file():
        raise UserError(f"{tokenizer_file} is missing: run the tokenizer@{spec.dataset} stage first (dvc repro)")
    job = train_job(params, run, seed, layout, data_dir, mean, std, tokenizer_file)
    name = f"{run}-{_job_key(job)}"
    storage = layout.ray_storage
    finished = storage / f"{name}.done"
    if (finished / "meta.json").is_file():
        say(f"pretrain {label}: already finished in an earlier attempt ({finished})")
        return finished
    uri, exp = _tracking(params, layout.root)
    run_id = _resume_or_start_run(uri, exp, storage / f"{name}.mlflow.json", run, seed, params, train, spec, data_dir,
                                  layout)
    fault = json.loads(os.environ["SSL_TASKS_FAULT"]) if os.environ.get("SSL_TASKS_FAULT") else {}
    job = TrainJob(**{**asdict(job), "train": train, "tracking": {"uri": uri, "run_id": run_id}, "fault": fault})
    say(f"pretrain {label}: {spec.objective} + {spec.encoder} on {spec.dataset}, {train.epochs} epochs, "
        f"{train.num_workers} Ray worker(s){' on GPU' if train.use_gpu else ''}")
    try:
        state = fit(job, storage_dir=storage, name=name, address=params.ray.address)
    except BaseException as e:
        collapse = re.search(r"run '[^']+' collapsed at epoch \d+: .*?stop_on_collapse is true", str(e))
        if collapse:
            mt.set_tags(uri, run_id, {"collapsed": "true"})
        mt.finish(uri, run_id, "FAILED")
        if collapse:  # a verdict on the run, not a crash: one readable line
            raise UserError(collapse.group(0)) from None
        raise
    history = json.loads(state["history"])
    record_compute(f"pretrain@{run}/seed-{seed}", sum(r["train/epoch_time_s"] for r in history))
    meta = {"run": run, "seed": seed, "dataset": spec.dataset, "modality": ds.modality, "objective": spec.objective,
            "objective_kwargs": spec.objective_kwargs, "encoder": spec.encoder, "encoder_kwargs": spec.encoder_kwargs,
            "mean": list(mean), "std": list(std), "label_names": ds.label_names, "mlflow_run_id": run_id,
            "data_hash": data_hash(data_dir), "epochs": train.epochs,
            "collapsed": any(r.get("monitor/collapsed") for r in history)}
    if text:
        from ssl_tasks.modalities.text.tokenizer import TextTokenizer

        tok = TextTokenizer.load(tokenizer_file)
        meta.update(vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    else:
        c, h, w = ds.image_shape
        meta.update(channels=c, image_size=min(h, w))
    with atomic_dir(finished) as tmp:
        torch.save(state["eval_encoder"], tmp / "encoder.pt")
        if with_tok:  # the model's own tokenizer beside it, and the heads (text tower) the metrics need
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            torch.save(state["objective"], tmp / "objective.pt")
        write_json_atomic(tmp / "meta.json", meta)
        write_json_atomic(tmp / "history.json", history)
        _plot_history(history, tmp / "history.png", label)
    mt.log_artifact(uri, run_id, finished / "encoder.pt", "checkpoint")
    mt.log_artifact(uri, run_id, finished / "meta.json", "checkpoint")
    if with_tok:
        mt.log_artifact(uri, run_id, finished / "tokenizer.json", "checkpoint")
    mt.log_artifact(uri, run_id, finished / "history.png", "plots")
    mt.set_tags(uri, run_id, {"collapsed": str(meta["collapsed"]).lower()})
    mt.finish(uri, run_id)
    (storage / f"{name}.mlflow.json").unlink(missing_ok=True)
    say(f"pretrain {label}: done, final loss {history[-1]['train/loss']:.4f}")
    return finished


def _resume_or_start_run(uri: str, exp: str, marker: Path, run: str, seed: int, params: Params, train: Any,
                         spec: Any, data_dir: Path, layout: Layout) -> str:
    """Reuse the MLflow run of an interrupted attempt at the same job, else start one."""
    if marker.is_file():
        run_id = json.loads(marker.read_text())["run_id"]
        if mt.run_exists(uri, run_id):
            return run_id
    tags = {"objective": spec.objective, "dataset": spec.dataset, "encoder": spec.encoder,
            "modality": params.dataset(spec.dataset).modality,
            "kind": "ssl", "seed": str(seed), "git_commit": git_commit(layout.root), "data_hash": data_hash(data_dir)}
    p = {"run": run, "seed": seed, "objective": spec.objective, "encoder": spec.encoder,
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
    if meta.get("modality") == "text":
        from ssl_tasks.modalities.text.encoders import build_text_encoder

        enc = build_text_encoder(meta["encoder"], meta["vocab_size"], meta["pad_id"], **meta["encoder_kwargs"])
    else:
        enc = build_encoder(meta["encoder"], meta["channels"], meta["image_size"], **meta["encoder_kwargs"])
    enc.load_state_dict(torch.load(pretrain_dir / "encoder.pt", map_location="cpu", weights_only=True))
    return enc, meta


def _run_protocols(params: Params, encoder: torch.nn.Module | None, ds: ImageDataset, mean: Any, std: Any,
                   label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    c, h, w = ds.image_shape
    views = ImageViews(params.evaluation.finetune_views, torch.tensor(mean), torch.tensor(std), min(h, w))
    return _timed_protocols(params, encoder, ds.load("train"), ds.load("test"), ds.num_classes, mean, std, views,
                            params.evaluation.protocols, label)


def _timed_protocols(params: Params, encoder: torch.nn.Module | None, train: Any, test: Any, num_classes: int,
                     mean: Any, std: Any, views: ImageViews | None, protocols: Any,
                     label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``evaluate_encoder`` with progress lines, the compute time recorded and a one-line summary."""
    t0 = time.perf_counter()
    metrics, subsets = evaluate_encoder(
        encoder, train, test, num_classes=num_classes, mean=mean, std=std, protocols=protocols,
        cfg=params.evaluation.settings, finetune_views=views, device="cuda" if torch.cuda.is_available() else "cpu",
        progress=lambda line: say(f"evaluate {label}: {line}"),
    )  # fmt: skip
    dt = time.perf_counter() - t0
    record_compute(f"evaluate@{label}", dt)
    say(f"evaluate {label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f" ({dt:.0f} s)")
    return metrics, subsets


def _text_protocols(params: Params, encoder: torch.nn.Module | None, ds: Any, tokenizer_file: Path, max_len: int,
                    label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The classification protocols on a text dataset: one padded sentence per row; skipped when unlabelled."""
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer
    from ssl_tasks.pipeline.text_stages import is_labelled, labelled_rows

    wanted = [p for p in params.evaluation.protocols if PROTOCOLS.get(p).kind in ("frozen", "finetune")]
    if not wanted:
        return {}, {}
    if not is_labelled(ds):
        say(f"evaluate {label}: {ds.root.name} is not fully labelled: {', '.join(wanted)} skipped")
        return {}, {}
    train, test = labelled_rows(ds, TextTokenizer.load(tokenizer_file), max_len)
    return _timed_protocols(params, encoder, train, test, ds.num_classes, (), (), None, wanted, label)


def _save_subsets(out: Path, subsets: dict[str, np.ndarray]) -> None:
    write_json_atomic(out / "label_subsets.json", {k: [int(i) for i in v] for k, v in subsets.items()})


def pretrained_seeds(pretrain_dir: Path) -> list[int]:
    f = pretrain_dir / "seeds.json"
    if not f.is_file():
        raise UserError(f"{pretrain_dir} has no seeds.json: run its pretrain stage first (dvc repro)")
    return [int(s) for s in json.loads(f.read_text())["seeds"]]


def evaluate(params: Params, run: str, layout: Layout) -> dict[str, Any]:
    """Every protocol on every seed's encoder; the row holds the per-seed metrics and their mean."""
    spec = params.run(run)
    data_dir = layout.data(spec.dataset)
    text = dataset_modality(data_dir) == "text"
    if text:
        from ssl_tasks.data.text_shards import TextDataset
        from ssl_tasks.pipeline.text_stages import DEFAULT_MAX_LEN, language_metrics

        ds: Any = TextDataset(data_dir)
    else:
        ds = open_dataset(data_dir)
    uri, _ = _tracking(params, layout.root)
    seeds = pretrained_seeds(layout.pretrain_dir(run))
    per_seed: dict[str, dict[str, float]] = {}
    run_ids, collapsed, subsets, samples = [], False, {}, {}
    for seed in seeds:
        pdir = layout.pretrain_dir(run) / f"seed-{seed}"
        encoder, meta = load_encoder(pdir)
        label = run if len(seeds) == 1 else f"{run} seed {seed}"
        if text:
            max_len = int(meta["encoder_kwargs"].get("max_len", DEFAULT_MAX_LEN))
            metrics, subsets = _text_protocols(params, encoder, ds, pdir / "tokenizer.json", max_len, label)
            lm, samples[seed] = language_metrics(meta, pdir, ds, params.evaluation.protocols,
                                                 say=lambda line, lb=label: say(f"evaluate {lb}: {line}"))
            metrics.update(lm)
        else:
            metrics, subsets = _run_protocols(params, encoder, ds, meta["mean"], meta["std"], label)
            from ssl_tasks.pipeline.pair_stages import load_two_tower, tower_metrics, trains_two_towers

            if trains_two_towers(spec.objective, ds.modality):
                obj, tok = load_two_tower(meta, pdir, ds)
                metrics.update(tower_metrics(obj, tok, ds, params.evaluation.protocols, params.evaluation.zero_shot,
                                             say=lambda line, lb=label: say(f"evaluate {lb}: {line}")))
        mt.log_metrics(uri, meta["mlflow_run_id"], {f"eval/{k}": v for k, v in metrics.items()})
        per_seed[str(seed)] = metrics
        run_ids.append(meta["mlflow_run_id"])
        collapsed = collapsed or bool(meta["collapsed"])
    with atomic_dir(layout.eval_dir(run)) as tmp:
        _save_subsets(tmp, subsets)  # the label subsets depend on evaluation.settings.seed only
        if any(samples.values()):
            from ssl_tasks.pipeline.text_stages import write_samples

            for seed, texts in samples.items():
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


# ----------------------------------------------------------------------------- baselines


def baselines(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    """Random-init encoder, raw pixels and the supervised ceiling through the same protocols."""
    from ssl_tasks.training.supervised import train_supervised

    b = params.baselines
    if dataset_modality(layout.data(dataset)) == "text":
        return _text_baselines(params, dataset, layout)
    ds = open_dataset(layout.data(dataset))
    mean, std = channel_stats(ds)
    c, h, w = ds.image_shape
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
            if ds.modality == "image_text" and kind != "supervised":
                metrics.update(_pair_baseline(params, layout, ds, dataset, kind, mean, std, name))
            rows[name] = _record_baseline(params, layout, tmp, ds.root, dataset, name, kind, ds.modality, encoder,
                                          b.encoder, b.encoder_kwargs, metrics, subsets)
    out = {"rows": rows}
    write_json_atomic(layout.eval_metrics(f"baselines-{dataset}"), out)
    return out


def _pair_baseline(params: Params, layout: Layout, ds: Any, dataset: str, kind: str, mean: Any, std: Any,
                   name: str) -> dict[str, float]:
    """Zero-shot / retrieval of the image-text baselines: random-init towers, or bags of words."""
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer
    from ssl_tasks.pipeline.pair_stages import bow_metrics, build_two_tower, tower_metrics

    b, ev = params.baselines, params.evaluation
    tok = TextTokenizer.load(layout.tokenizer_dir(dataset) / "tokenizer.json")
    log = lambda line: say(f"baselines {name}: {line}")  # noqa: E731
    if kind == "raw_pixels":
        return bow_metrics(ds, tok, ev.protocols, ev.zero_shot, say=log)
    torch.manual_seed(params.seed)
    obj = build_two_tower(b.image_text_objective, b.image_text_kwargs, b.encoder, b.encoder_kwargs, ds, tok, mean, std)
    return tower_metrics(obj, tok, ds, ev.protocols, ev.zero_shot, say=log)


def _record_baseline(params: Params, layout: Layout, tmp: Path, data_dir: Path, dataset: str, name: str, kind: str,
                     modality: str, encoder: torch.nn.Module | None, encoder_name: str, encoder_kwargs: dict[str, Any],
                     metrics: dict[str, float], subsets: dict[str, np.ndarray]) -> dict[str, Any]:
    """One baseline's MLflow run, its files under ``tmp/<kind>/`` and its leaderboard row."""
    uri, exp = _tracking(params, layout.root)
    enc = "-" if encoder is None else encoder_name
    tags = {"kind": "baseline", "baseline": kind, "dataset": dataset, "encoder": enc, "modality": modality,
            "git_commit": git_commit(layout.root), "data_hash": data_hash(data_dir)}
    run_id = mt.start_run(uri, exp, name, {"baseline": kind, "encoder": enc, "seed": params.seed,
                                           "encoder_kwargs": encoder_kwargs}, tags)
    mt.log_metrics(uri, run_id, {f"eval/{k}": v for k, v in metrics.items()})
    (tmp / kind).mkdir()
    _save_subsets(tmp / kind, subsets)
    if encoder is not None:
        torch.save(encoder.state_dict(), tmp / kind / "encoder.pt")
    mt.finish(uri, run_id)
    return {"dataset": dataset, "kind": kind, "objective": "-", "encoder": enc, "mlflow_run_id": run_id,
            "collapsed": False, "metrics": metrics}


def _text_baselines(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    """Random-init text encoder, bag of words, supervised ceiling and, for the LM metrics, a unigram model."""
    from ssl_tasks.data.text_shards import TextDataset
    from ssl_tasks.modalities.text.encoders import build_text_encoder
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer
    from ssl_tasks.pipeline.text_stages import DEFAULT_MAX_LEN, is_labelled, labelled_rows, unigram_row
    from ssl_tasks.training.supervised import train_supervised

    b = params.baselines
    ds = TextDataset(layout.data(dataset))
    tok_file = layout.tokenizer_dir(dataset) / "tokenizer.json"
    tok = TextTokenizer.load(tok_file)
    max_len = int(b.text_encoder_kwargs.get("max_len", DEFAULT_MAX_LEN))
    rows: dict[str, Any] = {}
    names = {"random_init": "random_init", "raw_pixels": "bag_of_words", "supervised": "supervised"}
    kinds = list(b.include) if is_labelled(ds) else []
    if any(PROTOCOLS.get(p).kind == "language" for p in params.evaluation.protocols):
        kinds.append("unigram")
    out_dir = layout.baselines_dir(dataset)
    with atomic_dir(out_dir) as tmp:
        for kind in kinds:
            name = f"{names.get(kind, kind)}@{dataset}"
            torch.manual_seed(params.seed)
            encoder = None
            if kind in ("random_init", "supervised"):
                encoder = build_text_encoder(b.text_encoder, tok.vocab_size, tok.pad_id, **b.text_encoder_kwargs)
            subsets: dict[str, np.ndarray] = {}
            if kind == "unigram":
                metrics = unigram_row(ds, tok_file, max_len)
                say(f"baselines {dataset}: unigram perplexity {metrics['perplexity/ppl']:.2f}")
            else:
                if kind == "supervised":
                    (x, y), _ = labelled_rows(ds, tok, max_len)
                    say(f"baselines {dataset}: supervised training of {b.text_encoder} for {b.supervised_epochs} "
                        "epochs")
                    t0 = time.perf_counter()
                    train_supervised(encoder, x, y, num_classes=ds.num_classes, views=None,
                                     epochs=b.supervised_epochs, lr=b.supervised_lr,
                                     batch_size=params.train.batch_size, seed=params.seed,
                                     log=lambda s: say(f"baselines {dataset}: {s}"))
                    record_compute(f"supervised@{dataset}", time.perf_counter() - t0)
                metrics, subsets = _text_protocols(params, encoder, ds, tok_file, max_len, name)
            rows[name] = _record_baseline(params, layout, tmp, ds.root, dataset, name, kind, "text", encoder,
                                          b.text_encoder, b.text_encoder_kwargs, metrics, subsets)
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
    children = [rid for row in rows.values() for rid in row.get("mlflow_run_ids", [row["mlflow_run_id"]])]
    for rid in children:
        if mt.run_exists(uri, rid) and mt.parent_of(uri, rid) is None:
            mt.set_tags(uri, rid, {"mlflow.parentRunId": parent})
            adopted.append(rid)
    for p in (csv, md, png):
        mt.log_artifact(uri, parent, p, "leaderboard")
    mt.set_tags(uri, parent, {"reused_child_runs": ",".join(r for r in children if r not in adopted)})
    mt.finish(uri, parent)
    print("\nLeaderboard (top-1 accuracy on the test split; every column names its protocol)\n")
    print(to_markdown(table, params.evaluation))
    print(f"written: {csv}, {md}, {png}; MLflow parent run {parent}")
    return table
