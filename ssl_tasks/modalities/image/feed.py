"""The image modality's training feed: uint8 (B, C, H, W) batches streamed from memory-mapped shards
(``shards.stream_epoch``), and the per-channel normalisation of a run (``channel_stats``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_tasks.core.modality import open_dataset
from ssl_tasks.modalities.image.shards import ImageDataset, stream_epoch
from ssl_tasks.objectives.base import DataSpec


@dataclass
class ImageFeed:
    ds: ImageDataset
    spec: DataSpec
    modality: str = "image"

    def count(self) -> int:
        return self.ds.count("train")

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        from ssl_tasks.modalities.image.encoders import build_encoder

        return build_encoder(name, self.spec.channels, self.spec.image_size, **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[np.ndarray]:
        return stream_epoch(self.ds, "train", batch_size=batch_size, seed=seed, epoch=epoch, rank=rank,
                            world_size=world_size)


def image_feed(job: Any) -> ImageFeed:
    """The images of a ``TrainJob``'s dataset: image shards, or an image–text dataset's (its reader is an image one)."""
    ds = open_dataset(Path(job.data_dir))
    c, h, w = ds.image_shape
    return ImageFeed(ds, DataSpec(channels=c, image_size=min(h, w), mean=tuple(job.mean), std=tuple(job.std)))


def channel_stats(ds: ImageDataset, max_samples: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units from (up to) the first ``max_samples`` train images."""
    seen, total, total_sq = 0, None, None
    for xb, _ in ds.iter_batches("train", 2048):
        x = xb.astype(np.float64) / 255.0  # (B, C, H, W)
        s, sq = x.sum(axis=(0, 2, 3)), (x**2).sum(axis=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        seen += x.shape[0] * x.shape[2] * x.shape[3]
        if seen >= max_samples * x.shape[2] * x.shape[3]:
            break
    mean = total / seen
    std = np.sqrt(np.maximum(total_sq / seen - mean**2, 1e-12))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
