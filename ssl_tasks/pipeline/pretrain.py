"""The ``pretrain@<run>`` stage: one Ray Train job per seed, each in its own MLflow run, written atomically."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ssl_tasks.core.config import to_dict
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, output_lock, write_json_atomic
from ssl_tasks.core.modality import Modality, modality_of
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.pipeline import lineage, runs
from ssl_tasks.pipeline.layout import Layout, say
from ssl_tasks.pipeline.params import Params
from ssl_tasks.tracking import mlflow_tracking as mt
from ssl_tasks.training.config import TrainJob
from ssl_tasks.training.loop import check_job


def job_objective_config(params: Params, run: str, layout: Layout) -> Any:
    """The run's typed objective config with its paths made absolute: the dataset's tokenizer (objectives that read
    one) and LiT's pretrained image tower, which must exist."""
    spec = params.run(run)
    cfg, paths = spec.objective_config, {}
    if OBJECTIVES.get(spec.objective).needs_tokenizer:
        path = Path(cfg.tokenizer)
        paths["tokenizer"] = str((path if path.is_absolute() else layout.root / path).resolve())
    if getattr(cfg, "init_image", ""):  # LiT: a pretrained image tower
        paths["init_image"] = pretrained_file(cfg.init_image, f"runs.{run}.objective_kwargs.init_image", layout)
    return replace(cfg, **paths) if paths else cfg


def pretrained_file(value: str, key: str, layout: Layout) -> str:
    """A params path to an earlier run's encoder.pt, relative to the project, as an absolute path that exists."""
    path = Path(value)
    path = (path if path.is_absolute() else layout.root / path).resolve()
    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist (pretrain that run first)")
    return str(path)


def train_job(params: Params, run: str, seed: int, layout: Layout, data_dir: Path, mean: tuple[float, ...],
              std: tuple[float, ...], tokenizer_file: Path | None = None) -> TrainJob:
    """The training job a pretrain stage hands to Ray Train for ``run`` and ``seed`` (without tracking)."""
    spec = params.run(run)
    # a pretrained start (e.g. SimCSE from an MLM run)
    init = pretrained_file(spec.init_encoder, f"runs.{run}.init_encoder", layout) if spec.init_encoder else ""
    return TrainJob(run=run, seed=seed, data_dir=str(Path(data_dir).resolve()), objective=spec.objective,
                    objective_config=job_objective_config(params, run, layout), encoder=spec.encoder,
                    encoder_kwargs=spec.encoder_kwargs, train=params.train_for(run), mean=mean, std=std,
                    tokenizer=str(tokenizer_file or ""), init_encoder=init, plugins=params.plugins,
                    plugin_root=str(layout.root.resolve()) if params.plugins else "")


def _job_key(job: TrainJob, starts: list[dict[str, str]] | None = None) -> str:
    """The Ray run name's hash: the job, and the content of the checkpoints it starts from (a changed start must not
    resume an attempt begun from the old one)."""
    d = to_dict(job)
    d.pop("tracking")
    if starts:
        d["starts"] = starts
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretrain(params: Params, run: str, layout: Layout) -> Path:
    """Pretrain one run on Ray Train, once per seed; write ``seed-<s>/`` (encoder.pt, meta.json, history) atomically.

    A seed that finished is kept under the Ray storage folder until every seed has, so a stage killed
    during seed k resumes there instead of retraining seeds before it. One pretrain of a run at a time: a second
    one (another shell, not DVC, which locks the repository) fails at once, before anything is started.
    """
    out = layout.pretrain_dir(run)
    # two pretrains of one run at once would share its Ray storage and MLflow resume marker
    with output_lock(out, f"run {run!r}"):
        return _pretrain(params, run, layout, out)


def _pretrain(params: Params, run: str, layout: Layout, out: Path) -> Path:
    spec, seeds = params.run(run), params.seeds_for(run)
    data_dir = layout.data(spec.dataset)
    modality = modality_of(data_dir)
    ds = modality.open(data_dir)
    mean, std = modality.prepare_run(ds, OBJECTIVES.get(spec.objective))
    starts = lineage.start_records(run, lineage.plain_run(spec), layout.root)  # what it starts from, by content
    done: dict[int, Path] = {}
    for i, seed in enumerate(seeds):
        label = run if len(seeds) == 1 else f"{run} seed {seed} ({i + 1}/{len(seeds)})"
        done[seed] = _pretrain_seed(params, run, seed, label, layout, modality, ds, mean, std, starts, check=i == 0)
    with atomic_dir(out) as tmp:
        for seed, src in done.items():
            shutil.copytree(src, tmp / f"seed-{seed}")
        write_json_atomic(tmp / "seeds.json", {"seeds": list(seeds)})
    for src in done.values():
        shutil.rmtree(src, ignore_errors=True)
    say(f"pretrain {run}: wrote {out} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    return out


def _fit(job: TrainJob, params: Params, storage: Path, name: str, uri: str, run_id: str) -> dict[str, Any]:
    """Ray Train's fit; a collapse verdict (``stop_on_collapse``) becomes one readable ``UserError``."""
    from ssl_tasks.training.ray_runner import fit

    try:
        return fit(job, storage_dir=storage, name=name, address=params.ray.address, store=params.ray.storage)
    except BaseException as e:
        collapse = re.search(r"run '[^']+' collapsed at epoch \d+: .*?stop_on_collapse is true", str(e))
        if collapse:
            mt.set_tags(uri, run_id, {"collapsed": "true"})
        mt.finish(uri, run_id, "FAILED")
        if collapse:  # a verdict on the run, not a crash: one readable line
            raise UserError(collapse.group(0)) from None
        raise


def _pretrain_seed(params: Params, run: str, seed: int, label: str, layout: Layout, modality: Modality, ds: Any,
                   mean: tuple[float, ...], std: tuple[float, ...], starts: list[dict[str, str]],
                   check: bool = True) -> Path:
    spec, train = params.run(run), params.train_for(run)
    data_dir = ds.root
    with_tok = modality.needs_tokenizer(OBJECTIVES.get(spec.objective))  # and keeps a copy beside its weights
    tokenizer_file = (layout.tokenizer_dir(spec.dataset) / "tokenizer.json").resolve() if with_tok else None
    if tokenizer_file is not None and not tokenizer_file.is_file():
        raise UserError(f"{tokenizer_file} is missing: run the tokenizer@{spec.dataset} stage first (dvc repro)")
    job = train_job(params, run, seed, layout, data_dir, mean, std, tokenizer_file)
    name = f"{run}-{_job_key(job, starts)}"
    storage = layout.ray_storage
    finished = storage / f"{name}.done"
    if (finished / "meta.json").is_file():
        say(f"pretrain {label}: already finished in an earlier attempt ({finished})")
        return finished
    if check:  # every param the workers will read, on this process, before Ray or MLflow start
        check_job(job)
    uri, exp = runs.tracking(params, layout.root)
    marker = storage / f"{name}.mlflow.json"
    run_id = runs.pretrain_run(uri, exp, marker, run, seed, spec, modality.name, train, layout.root, data_dir)
    job = replace(job, tracking={"uri": uri, "run_id": run_id})
    say(f"pretrain {label}: {spec.objective} + {spec.encoder} on {spec.dataset}, {train.epochs} epochs, "
        f"{train.num_workers} Ray worker(s){' on GPU' if train.use_gpu else ''}")
    state = _fit(job, params, storage, name, uri, run_id)
    history = json.loads(state["history"])
    meta = {"run": run, "seed": seed, "dataset": spec.dataset, "modality": modality.name,
            "objective": spec.objective, "objective_kwargs": spec.objective_kwargs,
            "objective_config": to_dict(spec.objective_config), "encoder": spec.encoder,
            "encoder_kwargs": spec.encoder_kwargs, "mean": list(mean), "std": list(std),
            "label_names": ds.label_names, "mlflow_run_id": run_id, "data_hash": runs.data_hash(data_dir),
            "epochs": train.epochs, "collapsed": any(r.get("monitor/collapsed") for r in history), "starts": starts,
            "diverged": any(r.get("monitor/diverged") for r in history),
            **modality.encoder_meta(ds, tokenizer_file)}
    with atomic_dir(finished) as tmp:
        torch.save(state["eval_encoder"], tmp / "encoder.pt")
        if tokenizer_file is not None:  # the model's own tokenizer, and the heads (text tower) the metrics need
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            torch.save(state["objective"], tmp / "objective.pt")
        write_json_atomic(tmp / "meta.json", meta)
        write_json_atomic(tmp / "history.json", history)
        plot_history(history, tmp / "history.png", label)
    for file, folder in (("encoder.pt", "checkpoint"), ("meta.json", "checkpoint"), ("history.png", "plots")):
        mt.log_artifact(uri, run_id, finished / file, folder)
    if tokenizer_file is not None:
        mt.log_artifact(uri, run_id, finished / "tokenizer.json", "checkpoint")
    mt.set_tags(uri, run_id, {"collapsed": str(meta["collapsed"]).lower(), "diverged": str(meta["diverged"]).lower()})
    mt.finish(uri, run_id)
    marker.unlink(missing_ok=True)
    say(f"pretrain {label}: done, final loss {history[-1]['train/loss']:.4f}")
    return finished


def plot_history(history: list[dict[str, float]], path: Path, title: str) -> None:
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
