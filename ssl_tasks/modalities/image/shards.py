"""The canonical image dataset: ``.npy`` shards plus a ``manifest.json``.

Layout of a dataset directory::

    manifest.json
    train/shard-00000.images.npy   uint8 (N, C, H, W)
    train/shard-00000.labels.npy   int64 (N,)   (-1 = unlabeled)
    test/...

``.npy`` (not ``.npz``: zip entries carry timestamps) plus canonical JSON makes a dataset
byte-identical when ingested twice from the same input. Shards are memory-mapped when read,
so readers hold one shard's pages at a time and memory stays flat for any dataset size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import (
    ManifestDataset,
    check_write_args,
    shard_entry,
    split_summary,
    write_manifest_dataset,
)

FORMAT = "ssl_tasks.image_shards/v1"


@dataclass(frozen=True)
class SplitData:
    """One split as the writer consumes it: labels up front, images in chunks.

    ``chunks`` yields uint8 arrays of shape (n, C, H, W) in the order of ``labels``.
    """

    labels: np.ndarray
    chunks: Iterator[np.ndarray]


def write_dataset(
    out: Path,
    splits: dict[str, SplitData],
    *,
    image_shape: Sequence[int],
    label_names: Sequence[str],
    source: dict[str, Any],
    shard_size: int = 8192,
) -> dict[str, Any]:
    """Write splits as shards + manifest into ``out`` atomically; return the manifest."""
    return write_image_format(out, FORMAT, "image", splits, sum(len(s.labels) for s in splits.values()), "samples",
                              image_shape, label_names, source, shard_size, _write_split)


def write_image_format(out: Path, fmt: str, modality: str, splits: dict[str, Any], n_samples: int, what: str,
                       image_shape: Sequence[int], label_names: Sequence[str], source: dict[str, Any], shard_size: Any,
                       write_split: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Write a format that stores uint8 (C, H, W) image shards (image, image–caption): check the arguments, build
    the manifest head, then ``write_split(root, split, data, shape, n_classes, shard_size)`` per split, atomically."""
    size = check_write_args(shard_size, n_samples, source, what)
    manifest = image_manifest(fmt, modality, image_shape, label_names, source)
    shape = tuple(manifest["image_shape"])
    return write_manifest_dataset(
        out, manifest, splits, lambda root, split, data: write_split(root, split, data, shape, len(label_names), size)
    )


def image_manifest(fmt: str, modality: str, image_shape: Sequence[int], label_names: Sequence[str],
                   source: dict[str, Any]) -> dict[str, Any]:
    """The manifest head shared by the formats that store uint8 (C, H, W) image shards; ``splits`` to fill."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3:
        raise UserError(f"image_shape must be (C, H, W), got {shape}")
    return {"format": fmt, "modality": modality, "image_shape": list(shape), "dtype": "uint8",
            "value_range": [0, 255], "label_names": list(label_names), "source": source, "splits": {}}


def _write_split(
    root: Path, split: str, data: SplitData, shape: tuple[int, ...], n_classes: int, shard_size: int
) -> dict[str, Any]:
    labels = np.asarray(data.labels, dtype=np.int64)
    (root / split).mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    buf: list[np.ndarray] = []
    buffered = 0
    written = 0

    def flush(images: np.ndarray) -> None:
        nonlocal written
        stem = f"{split}/shard-{len(shards):05d}"
        files = {"images": f"{stem}.images.npy", "labels": f"{stem}.labels.npy"}
        lab = labels[written : written + len(images)]
        np.save(root / files["images"], np.ascontiguousarray(images, dtype=np.uint8))
        np.save(root / files["labels"], np.ascontiguousarray(lab, dtype=np.int64))
        shards.append(shard_entry(root, files, len(images)))
        written += len(images)

    for chunk in data.chunks:
        chunk = np.asarray(chunk)
        if chunk.dtype != np.uint8 or chunk.shape[1:] != shape:
            raise UserError(
                f"split {split!r}: expected uint8 images of shape {shape}, "
                f"got {chunk.dtype} {tuple(chunk.shape[1:])}"
            )
        buf.append(chunk)
        buffered += len(chunk)
        while buffered >= shard_size:
            allimg = np.concatenate(buf)
            flush(allimg[:shard_size])
            rest = allimg[shard_size:]
            buf, buffered = ([rest] if len(rest) else []), len(rest)
    if buffered:
        flush(np.concatenate(buf))
    if written != len(labels):
        raise UserError(f"split {split!r}: {len(labels)} labels but {written} images")
    return {**split_summary(labels, n_classes), "shards": shards}


class ImageDataset(ManifestDataset):
    """Read access to an ingested dataset directory (memory-mapped shards)."""

    modality = "image"
    format: ClassVar[str] = FORMAT  # the manifest format this reader accepts (subclasses override it)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise UserError(f"{self.root} is not an ingested dataset (no manifest.json); run `ssl-tasks ingest` first")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON: {e}") from None
        if self.manifest.get("format") != self.format:
            raise UserError(f"{path}: unsupported format {self.manifest.get('format')!r} (expected {self.format})")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.manifest["image_shape"]
        return int(c), int(h), int(w)


    def shards(self, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Memory-mapped (images, labels) per shard; nothing is read until indexed."""
        out = []
        for s in self._split(split)["shards"]:
            images = np.load(self.root / s["images"], mmap_mode="r", allow_pickle=False)
            labels = np.load(self.root / s["labels"], mmap_mode="r", allow_pickle=False)
            out.append((images, labels))
        return out

    def shard_images(self, split: str) -> list[np.ndarray]:
        """Memory-mapped image arrays only: training readers never open label files."""
        return [np.load(self.root / s["images"], mmap_mode="r", allow_pickle=False) for s in self._split(split)["shards"]]

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split in memory (for evaluation sets that fit)."""
        parts = self.shards(split)
        return np.concatenate([np.asarray(i) for i, _ in parts]), np.concatenate([np.asarray(lab) for _, lab in parts])

    def iter_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Sequential batches in stored order, one shard mapped at a time."""
        for images, labels in self.shards(split):
            for i in range(0, len(images), batch_size):
                yield np.asarray(images[i : i + batch_size]), np.asarray(labels[i : i + batch_size])



def stream_epoch(
    ds: ImageDataset, split: str, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> Iterator[np.ndarray]:
    """Shuffled training batches (uint8 images only: labels never leave this reader).

    Shard order and in-shard order are permuted from ``(seed, epoch)``; rank ``r`` takes
    every ``world_size``-th sample, and every rank yields the same number of full batches.
    """
    rng = np.random.default_rng([seed, epoch])
    shards = ds.shard_images(split)
    n_batches = ds.count(split) // (batch_size * world_size)
    if n_batches == 0:
        raise UserError(
            f"split {split!r} has {ds.count(split)} samples: too few for batch_size={batch_size} x {world_size} workers"
        )
    emitted = 0
    carry = np.zeros((0, *ds.image_shape), dtype=np.uint8)  # < batch_size rows left from the last shard
    offset = 0  # global sample position, for rank striding
    for si in rng.permutation(len(shards)):
        images = shards[si]
        order = rng.permutation(len(images))
        mine = order[(rank - offset) % world_size :: world_size]
        offset += len(images)
        # Sorted reads from the memory map are faster; the shuffle is restored after.
        taken = np.asarray(images[np.sort(mine)])
        block = taken[np.argsort(np.argsort(mine))]
        if len(carry):
            block = np.concatenate([carry, block])
        n_full = len(block) // batch_size
        for b in range(n_full):
            if emitted >= n_batches:
                return
            yield block[b * batch_size : (b + 1) * batch_size]  # a view: no copy per batch
            emitted += 1
        carry = block[n_full * batch_size :]
        if emitted >= n_batches:
            return
