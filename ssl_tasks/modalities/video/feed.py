"""What the training loop eats on video: uint8 clips (B, T, C, H, W) from the memory-mapped train shards, and the
per-channel normalisation of a run (``channel_stats``).

Epoch ``e`` on rank ``r`` of ``W`` is ``training.feeds.stream_rows`` over the row indices (a seeded permutation from
``(seed, e)``, every ``W``-th row, full batches); a batch reads only its own rows from the memory map, so memory
stays flat as the dataset grows. Labels are never opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.video.shards import VideoDataset
from ssl_tasks.modalities.video.spec import VideoDataSpec

NAME = "video"


def channel_stats(ds: VideoDataset, max_clips: int = 2000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units over (up to) the first ``max_clips`` train clips' pixels."""
    clips = ds.column("train", "clips")[:max_clips]  # (N, T, C, H, W) memory-mapped
    total = np.zeros(ds.channels)
    total_sq = np.zeros(ds.channels)
    for s in range(0, len(clips), 256):
        x = np.asarray(clips[s : s + 256], dtype=np.float64) / 255.0
        total += x.sum(axis=(0, 1, 3, 4))
        total_sq += np.square(x).sum(axis=(0, 1, 3, 4))
    seen = max(len(clips), 1) * ds.frames * ds.height * ds.width
    mean = total / seen
    std = np.sqrt(np.maximum(total_sq / seen - mean**2, 1e-12))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


@dataclass
class VideoFeed:
    clips: np.ndarray  # (N, T, C, H, W) uint8, memory-mapped
    spec: VideoDataSpec
    modality: str = NAME

    def count(self) -> int:
        return len(self.clips)

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        s = self.spec
        return ENCODERS.get(name)(in_channels=s.channels, frames=s.frames, image_size=min(s.height, s.width), **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int,
              world_size: int) -> Iterator[np.ndarray]:
        from ssl_tasks.training.feeds import stream_rows

        for idx in stream_rows(np.arange(len(self.clips)), batch_size=batch_size, seed=seed, epoch=epoch, rank=rank,
                               world_size=world_size):
            yield np.ascontiguousarray(self.clips[idx])  # (B, T, C, H, W) uint8


def video_feed(job: Any) -> VideoFeed:
    """The train split of a ``TrainJob``'s video dataset, normalised with the run's statistics."""
    ds = VideoDataset(Path(job.data_dir))
    spec = VideoDataSpec(frames=ds.frames, channels=ds.channels, height=ds.height, width=ds.width,
                         mean=tuple(job.mean), std=tuple(job.std))
    return VideoFeed(ds.column("train", "clips"), spec)


__all__ = ["VideoFeed", "channel_stats", "video_feed"]
