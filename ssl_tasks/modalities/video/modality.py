"""The video modality plug-in: uint8 clip shards (``ssl-tasks-video/v1``), the ``video_vit`` encoder and VideoMAE,
clip probes on every label set of the dataset, and the random-init, raw-pixel and supervised baselines.

Evaluation: a clip's embedding is the encoder's pooled output over all its tubelets (eval mode, no masking).
``knn`` and ``linear`` run on the main label set (``<protocol>/top1``, the leaderboard's column) and on every extra
label set of the manifest (``<protocol>/<set>_top1``: on moving sprites the main set is the direction of motion, the
extras the sprite's class and its speed), from one feature extraction; ``semi_1pct`` / ``semi_10pct`` / ``finetune``
fine-tune the encoder and a linear head on class-balanced label subsets of the main set (the library's protocol,
no augmentation: a flip or crop would change the motion the labels describe).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import MODALITIES, BaselineResult, BaselineSpec, EvalContext, Modality, applicable
from ssl_tasks.modalities.video import encoders as _encoders  # noqa: F401  (registers video_vit)
from ssl_tasks.modalities.video import shards
from ssl_tasks.modalities.video import sources as _sources  # noqa: F401  (registers moving_sprites, video_folder)

DEFAULT_BASELINE_ENCODER = "video_vit"
_STATS: dict[tuple[str, str], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def clip_stats(ds: shards.VideoDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``feed.channel_stats`` of a dataset, once per process and ingest (the manifest's hash keys it)."""
    import hashlib

    from ssl_tasks.modalities.video.feed import channel_stats

    key = (str(ds.root), hashlib.sha256((ds.root / "manifest.json").read_bytes()).hexdigest())
    if key not in _STATS:
        _STATS[key] = channel_stats(ds)
    return _STATS[key]


class NormalisedClips(nn.Module):
    """A video encoder taking uint8 clips (B, T, C, H, W): normalises them first, so the library's supervised loop,
    which feeds its inputs as they are when it has no views, drives it."""

    def __init__(self, encoder: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = int(encoder.out_dim)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = (x.float() / 255 - self.mean) / self.std
        return self.encoder(x)


def label_sets(ds: shards.VideoDataset, split: str) -> dict[str, np.ndarray]:
    """The extra label sets of a split by name: int64 (N,) each (-1 = unlabelled)."""
    extra = ds.column(split, "extra")
    return {name: np.asarray(extra[:, j], dtype=np.int64) for j, name in enumerate(ds.label_sets)}


@MODALITIES.register("video")
class VideoModality(Modality):
    name: ClassVar[str] = "video"
    formats: ClassVar[tuple[str, ...]] = (shards.FORMAT,)
    trains: ClassVar[tuple[str, ...]] = ("video",)
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen", "finetune"})

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return shards.write_video_dataset(out, result, source, shard_size)

    def open(self, root: Path) -> shards.VideoDataset:
        return shards.VideoDataset(Path(root))

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        from ssl_tasks.modalities.video.checks import build_video_tables, video_suite

        tables = build_video_tables(ds)
        return tables, video_suite(tables, config)

    # ------------------------------------------------------------------ pretraining

    def prepare_run(self, ds: Any, objective: type) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if "train" not in ds.splits() or not ds.count("train"):
            raise UserError(f"{ds.root}: pretraining reads the train split; splits: {', '.join(ds.splits())}")
        return clip_stats(ds)

    def encoder_meta(self, ds: Any, tokenizer_file: Path | None) -> dict[str, Any]:
        return {"channels": ds.channels, "frames": ds.frames, "image_size": min(ds.height, ds.width)}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        cls = ENCODERS.get(name)
        if getattr(cls, "modality", None) != "video":
            video = [n for n in ENCODERS.names() if getattr(ENCODERS.get(n), "modality", "") == "video"]
            raise UserError(f"encoder {name!r} does not encode video; video encoders: {', '.join(video)}")
        return cls(in_channels=meta["channels"], frames=meta["frames"], image_size=meta["image_size"], **kwargs)

    def feed(self, job: Any) -> Any:
        from ssl_tasks.modalities.video.feed import video_feed

        return video_feed(job)

    # ------------------------------------------------------------------ evaluation

    def _protocols(self, ctx: EvalContext, encoder: nn.Module | None, ds: Any, mean: Any, std: Any,
                   label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Frozen probes on every label set from one extraction, then fine-tuning on the main set;
        ``encoder=None``: the raw pixels (flattened clips) in place of features, logistic regression for 1% / 10%."""
        from ssl_tasks.evaluation.features import extract_features, raw_pair
        from ssl_tasks.evaluation.knn import knn_top1
        from ssl_tasks.evaluation.linear_probe import linear_probe_top1
        from ssl_tasks.evaluation.protocols import PROTOCOLS, run_protocols

        wanted = applicable(ctx.protocols, self.protocol_kinds)
        if not wanted or not ds.num_classes or "test" not in ds.splits():
            ctx.say(f"{label}: no protocol applies, or the dataset has no labels or no test split: probes skipped")
            return {}, {}
        (x_tr, y_tr), (x_te, y_te) = ds.load("train"), ds.load("test")
        if (y_tr < 0).any() or (y_te < 0).any():
            ctx.say(f"{label}: some clips are unlabelled: probes skipped")
            return {}, {}
        s, t0 = ctx.settings, time.perf_counter()
        sets = {"": (y_tr, y_te, ds.num_classes)}
        extra_tr, extra_te = label_sets(ds, "train"), label_sets(ds, "test")
        for name, names in ds.label_sets.items():
            if (extra_tr[name] >= 0).all() and (extra_te[name] >= 0).all():
                sets[name] = (extra_tr[name], extra_te[name], len(names))
        metrics: dict[str, float] = {}
        frozen = [p for p in wanted if PROTOCOLS.get(p).kind == "frozen"]
        if frozen:
            ctx.say(f"{label}: {'flattening raw pixels' if encoder is None else 'extracting clip features'} of "
                    f"{len(x_tr)} + {len(x_te)} clips ...")
            if encoder is None:
                f_tr, f_te = raw_pair(x_tr, x_te)
            else:
                f_tr = extract_features(encoder, x_tr, mean, std, batch_size=s.batch_size)
                f_te = extract_features(encoder, x_te, mean, std, batch_size=s.batch_size)
            for set_name, (a, b, k) in sets.items():
                ya, yb = torch.from_numpy(a), torch.from_numpy(b)
                key = "top1" if not set_name else f"{set_name}_top1"
                for p in frozen:
                    if p == "knn":
                        metrics[f"knn/{key}"] = knn_top1(f_tr, ya, f_te, yb, num_classes=k, k=s.k,
                                                          temperature=s.temperature)
                    elif p == "linear":
                        metrics[f"linear/{key}"] = linear_probe_top1(f_tr, ya, f_te, yb, num_classes=k,
                                                                     epochs=s.linear_epochs, lr=s.linear_lr,
                                                                     seed=s.seed)
        tuned = [p for p in wanted if PROTOCOLS.get(p).kind == "finetune"]
        subsets: dict[str, np.ndarray] = {}
        if tuned:
            m, subsets = run_protocols(ctx, encoder, (x_tr, y_tr), (x_te, y_te), num_classes=ds.num_classes,
                                       label=label, mean=mean, std=std, views=None, protocols=tuned)
            metrics.update(m)
        ctx.say(f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                + f" ({time.perf_counter() - t0:.0f} s)")
        return metrics, subsets

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        metrics, subsets = self._protocols(ctx, encoder, ds, meta["mean"], meta["std"], label)
        return metrics, subsets, []

    def baselines(self, ds: Any, cfg: Any, protocols: Any) -> list[BaselineSpec]:
        if not ds.num_classes:
            return []
        name, kwargs = cfg.encoder, dict(cfg.encoder_kwargs)
        if getattr(ENCODERS.get(name), "modality", None) != "video":
            name, kwargs = DEFAULT_BASELINE_ENCODER, {}
        return [BaselineSpec(kind, kind, name, kwargs) for kind in cfg.include
                if kind in ("random_init", "raw_pixels", "supervised")]

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        from ssl_tasks.training.supervised import train_supervised

        mean, std = clip_stats(ds)
        encoder = None
        if spec.kind != "raw_pixels":
            torch.manual_seed(ctx.seed)
            encoder = self.build_encoder(spec.encoder_name, spec.encoder_kwargs, self.encoder_meta(ds, None))
        if spec.kind == "supervised":
            x, y = ds.load("train")
            ctx.say(f"{label}: supervised training of {spec.encoder_name} on {len(x)} clips for "
                    f"{cfg.supervised_epochs} epochs")
            t0 = time.perf_counter()
            train_supervised(NormalisedClips(encoder, mean, std), x, y, num_classes=ds.num_classes, views=None,
                             epochs=max(int(cfg.supervised_epochs), 1), lr=cfg.supervised_lr,
                             batch_size=ctx.batch_size, seed=ctx.seed, log=lambda s: ctx.say(f"{label}: {s}"))
            ctx.say(f"{label}: supervised training took {time.perf_counter() - t0:.0f} s")
        metrics, subsets = self._protocols(ctx, encoder, ds, mean, std, label)
        return BaselineResult(metrics, subsets, encoder)

    def describe(self) -> str:
        return ("uint8 clip shards (T, C, H, W); video ViT over space-time tubelets; k-NN and linear probes on every "
                "label set (moving sprites: direction, class, speed), 1%/10% fine-tuning")
