"""The image modality plug-in: uint8 (C, H, W) shards, k-means visual tokens (BEiT's targets), CNN/ViT encoders,
the k-NN / linear / 1% / 10% protocols, and the random-init, raw-pixel and supervised baselines."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.io import atomic_dir, write_json_atomic
from ssl_tasks.core.modality import MODALITIES, BaselineResult, BaselineSpec, EvalContext, Modality, Say
from ssl_tasks.modalities.image import shards
from ssl_tasks.modalities.image import sources as _sources  # noqa: F401  (registers the image sources)


@dataclass(frozen=True)
class VisualTokenizerConfig:
    """The dataset's visual tokenizer (k-means over patches, the ``tokenizer@<dataset>`` stage) for BEiT runs."""

    patch_size: int = 4
    num_codes: int = 256
    max_patches: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("patch_size", "num_codes", "max_patches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


#: Per-channel (mean, std) of each open reader: the baselines stage runs every baseline on one reader.
_CHANNEL_STATS: weakref.WeakKeyDictionary[Any, tuple[tuple[float, ...], tuple[float, ...]]] = (
    weakref.WeakKeyDictionary()
)


def dataset_channel_stats(ds: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``feed.channel_stats(ds)``, computed once per reader (a reader's shards never change under it)."""
    if ds not in _CHANNEL_STATS:
        from ssl_tasks.modalities.image.feed import channel_stats

        _CHANNEL_STATS[ds] = channel_stats(ds)
    return _CHANNEL_STATS[ds]


@MODALITIES.register("image")
class ImageModality(Modality):
    name: ClassVar[str] = "image"
    formats: ClassVar[tuple[str, ...]] = (shards.FORMAT,)
    trains: ClassVar[tuple[str, ...]] = ("image",)
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen", "finetune"})
    tokenizer_config: ClassVar[type] = VisualTokenizerConfig

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return shards.write_dataset(out, result.splits, image_shape=result.image_shape, label_names=result.label_names,
                                    source=source, shard_size=shard_size)

    def open(self, root: Path) -> shards.ImageDataset:
        return shards.ImageDataset(Path(root))

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        from ssl_tasks.modalities.image.checks import build_tables, image_suite

        tables = build_tables(ds.root)
        return tables, image_suite(tables, config)

    def train_tokenizer(self, data_dir: Path, out_dir: Path, cfg: Any, say: Say) -> dict[str, Any]:
        from ssl_tasks.modalities.image.visual_tokenizer import train_tokenizer

        say(f"k-means, {cfg.num_codes} codes over {cfg.patch_size}x{cfg.patch_size} patches "
            f"(up to {cfg.max_patches} patches)")
        with atomic_dir(out_dir) as tmp:
            summary = train_tokenizer(data_dir, tmp / "tokenizer.pt", patch_size=cfg.patch_size,
                                      num_codes=cfg.num_codes, seed=cfg.seed, max_patches=cfg.max_patches)
            write_json_atomic(tmp / "summary.json", summary)
        say(f"{summary['codes_used']}/{summary['num_codes']} codes used, mean distance {summary['inertia']:.3f} "
            f"({summary['seconds']:.1f} s); wrote {out_dir}")
        return summary

    # ------------------------------------------------------------------ pretraining

    def prepare_run(self, ds: Any, objective: type) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from ssl_tasks.objectives.base import DataSpec

        c, h, w = ds.image_shape
        objective.check_data(DataSpec(channels=c, image_size=min(h, w), mean=(), std=()))
        return dataset_channel_stats(ds)

    def encoder_meta(self, ds: Any, tokenizer_file: Path | None) -> dict[str, Any]:
        c, h, w = ds.image_shape
        return {"channels": c, "image_size": min(h, w)}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        from ssl_tasks.modalities.image.encoders import build_encoder

        return build_encoder(name, meta["channels"], meta["image_size"], **kwargs)

    def feed(self, job: Any) -> Any:
        from ssl_tasks.modalities.image.feed import image_feed

        return image_feed(job)

    # ------------------------------------------------------------------ evaluation

    def views(self, ctx: EvalContext, ds: Any, mean: Any, std: Any) -> Any:
        from ssl_tasks.modalities.image.views import ImageViews

        _, h, w = ds.image_shape
        return ImageViews(ctx.finetune_views, torch.tensor(mean), torch.tensor(std), min(h, w))

    def image_protocols(self, ctx: EvalContext, encoder: nn.Module | None, ds: Any, mean: Any, std: Any,
                        label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        from ssl_tasks.evaluation.protocols import run_protocols

        return run_protocols(ctx, encoder, ds.load("train"), ds.load("test"), num_classes=ds.num_classes,
                             label=label, mean=mean, std=std, views=self.views(ctx, ds, mean, std))

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        metrics, subsets = self.image_protocols(ctx, encoder, ds, meta["mean"], meta["std"], label)
        return metrics, subsets, []

    def baselines(self, ds: Any, cfg: Any, protocols: Any) -> list[BaselineSpec]:
        return [BaselineSpec(kind, kind, cfg.encoder, cfg.encoder_kwargs) for kind in cfg.include]

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        from ssl_tasks.training.supervised import train_supervised

        mean, std = dataset_channel_stats(ds)  # once per dataset, not once per baseline
        c, h, w = ds.image_shape
        encoder = None
        if spec.kind != "raw_pixels":
            meta = {"channels": c, "image_size": min(h, w)}
            encoder = self.build_encoder(spec.encoder_name, spec.encoder_kwargs, meta)
        if spec.kind == "supervised":
            x, y = ds.load("train")
            ctx.say(f"{label}: supervised training of {spec.encoder_name} for {cfg.supervised_epochs} epochs")
            t0 = time.perf_counter()
            train_supervised(encoder, x, y, num_classes=ds.num_classes, views=self.views(ctx, ds, mean, std),
                             epochs=cfg.supervised_epochs, lr=cfg.supervised_lr, batch_size=ctx.batch_size,
                             seed=ctx.seed, log=lambda s: ctx.say(f"{label}: {s}"))
            ctx.say(f"{label}: supervised training took {time.perf_counter() - t0:.0f} s")
        metrics, subsets = self.image_protocols(ctx, encoder, ds, mean, std, label)
        return BaselineResult(metrics, subsets, encoder)

    def describe(self) -> str:
        return "uint8 image shards; CNN and ViT encoders; k-NN, linear, 1%/10% fine-tuning"
