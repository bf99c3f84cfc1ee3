"""The image plug-in computes a dataset's channel statistics once, however many baselines run on its reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_tasks.modalities.image import feed, modality
from ssl_tasks.modalities.image.shards import ImageDataset


def test_channel_stats_once_per_reader(digits_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def counting(ds: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
        calls.append(ds)
        return (0.25,), (0.5,)

    monkeypatch.setattr(feed, "channel_stats", counting)
    ds = ImageDataset(digits_dataset)
    assert modality.dataset_channel_stats(ds) == ((0.25,), (0.5,))
    assert modality.dataset_channel_stats(ds) == ((0.25,), (0.5,))  # the baselines stage's second baseline
    assert calls == [ds]
    other = ImageDataset(digits_dataset)  # a fresh reader (another stage) computes its own
    modality.dataset_channel_stats(other)
    assert calls == [ds, other]


def test_channel_stats_match_the_feed(digits_dataset: Path) -> None:
    ds = ImageDataset(digits_dataset)
    assert modality.dataset_channel_stats(ds) == feed.channel_stats(ds)
