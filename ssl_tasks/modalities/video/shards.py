"""The video dataset format, ``ssl-tasks-video/v1``: uint8 clip shards plus per-row label columns and records.

Layout (plain ``.npy``, no pickles; clips memory-mapped when read)::

    manifest.json                    format, modality "video", frames T, channels C, height H, width W, fps (the
                                     stored clips' frame rate), label_names (the main label set), main_label,
                                     label_sets {name: [class names]} (the extra label sets), extra_labels (their
                                     names in column order), synthetic, source, splits (counts, class_counts,
                                     shards with each file's sha256)
    train/shard-00000.clips.npy      uint8 (N, T, C, H, W)
    train/shard-00000.labels.npy     int64 (N,)   main label, -1 = unlabelled
    train/shard-00000.extra.npy      int64 (N, K) the extra label sets in ``extra_labels`` order (K may be 0)
    train/shard-00000.rows.json      per row: id (source path or generated id), sha256 of the stored clip bytes,
                                     source_fps, source_frames, source_height, source_width, and the source's own
                                     facts (moving_sprites: sprite, speed, angle, bounces, ...)
    test/...

The manifest is canonical JSON (sorted keys), so ``label_sets`` reads back in name order: the writer stores the
extra columns sorted by label-set name, and ``extra_labels`` records that order explicitly. ``.npy`` plus canonical
JSON make two ingests of the same input byte-identical; ``verify`` re-checks every file's sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import read_manifest
from ssl_tasks.data.shards import (
    ManifestDataset,
    check_write_args,
    save_columns,
    shard_entry,
    split_summary,
    write_manifest_dataset,
)

FORMAT = "ssl-tasks-video/v1"
NAME = "video"
ROW_FACTS = ("source_fps", "source_frames", "source_height", "source_width")  # every row of every source has these
COLUMNS = ("clips", "labels", "extra")


def _check_split(split: str, data: Any, shape: tuple[int, int, int, int], k: int) -> None:
    n = len(data.ids)
    clips, labels, extra = np.asarray(data.clips), np.asarray(data.labels), np.asarray(data.extra)
    if clips.dtype != np.uint8 or clips.shape != (n, *shape):
        raise UserError(f"video split {split!r}: clips must be uint8 of shape {(n, *shape)}; got {clips.dtype} "
                        f"{clips.shape}")
    if labels.shape != (n,) or extra.shape != (n, k) or len(data.rows) != n:
        raise UserError(f"video split {split!r}: {n} ids but labels {labels.shape}, extra {extra.shape} (K = {k}) "
                        f"and {len(data.rows)} rows")
    missing = [f for f in ROW_FACTS if any(f not in r for r in data.rows)]
    if missing:
        raise UserError(f"video split {split!r}: rows lack {', '.join(missing)}")


def write_video_dataset(out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
    """Write a ``sources.VideoSourceResult`` at ``out`` atomically; return the manifest."""
    n = sum(len(s.ids) for s in result.splits.values())
    size = check_write_args(shard_size, n, source, "video clips")
    shape = (int(result.frames), int(result.channels), int(result.height), int(result.width))
    if shape[1] not in (1, 3):
        raise UserError(f"video shards store 1 (grayscale) or 3 (RGB) channels, not {shape[1]}")
    given = list(result.label_sets)
    order = sorted(given)  # the column order a sorted-key manifest reads back
    columns = [given.index(name) for name in order]
    for split, data in result.splits.items():
        _check_split(split, data, shape, len(given))
    manifest = {"format": FORMAT, "modality": NAME, "frames": shape[0], "channels": shape[1], "height": shape[2],
                "width": shape[3], "fps": float(result.fps), "label_names": list(result.label_names),
                "main_label": str(result.main_label),
                "label_sets": {name: list(result.label_sets[name]) for name in order}, "extra_labels": order,
                "synthetic": bool(result.synthetic), "source": source, "splits": {}}

    def write_split(root: Path, split: str, data: Any) -> dict[str, Any]:
        (root / split).mkdir(parents=True, exist_ok=True)
        clips = np.asarray(data.clips)
        labels = np.asarray(data.labels, dtype=np.int64)
        extra = np.asarray(data.extra, dtype=np.int64)[:, columns]  # (N, K) in name order
        shards = []
        for start in range(0, len(data.ids), size):
            stop = min(start + size, len(data.ids))
            part = np.ascontiguousarray(clips[start:stop])  # (n, T, C, H, W)
            rows = [{**data.rows[i], "id": data.ids[i], "sha256": hashlib.sha256(part[i - start].tobytes()).hexdigest()}
                    for i in range(start, stop)]
            files = save_columns(root, f"{split}/shard-{len(shards):05d}",
                                 {"clips": part, "labels": labels[start:stop], "extra": extra[start:stop]},
                                 {"rows": rows})
            shards.append(shard_entry(root, files, stop - start))
        return {**split_summary(labels, len(result.label_names)), "shards": shards}

    return write_manifest_dataset(out, manifest, result.splits, write_split)


class VideoDataset(ManifestDataset):
    """An ingested video dataset: memory-mapped clip shards, label columns and per-row records."""

    modality = NAME
    shard_files = ("clips", "labels", "extra", "rows")

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{self.root}: format {self.manifest.get('format')!r} is not {FORMAT}")

    @property
    def frames(self) -> int:
        return int(self.manifest["frames"])

    @property
    def channels(self) -> int:
        return int(self.manifest["channels"])

    @property
    def height(self) -> int:
        return int(self.manifest["height"])

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])

    @property
    def main_label(self) -> str:
        return str(self.manifest["main_label"])

    @property
    def synthetic(self) -> bool:
        return bool(self.manifest.get("synthetic", False))

    @property
    def label_sets(self) -> dict[str, list[str]]:
        """The extra label sets, by name, in the column order of ``column(split, "extra")``."""
        sets = self.manifest.get("label_sets", {})
        return {name: list(sets[name]) for name in self.manifest.get("extra_labels", sorted(sets))}

    def shards(self, split: str) -> Iterator[dict[str, np.ndarray]]:
        """Per shard: ``clips`` (memory-mapped, (n, T, C, H, W)), ``labels`` (n,), ``extra`` (n, K)."""
        for s in self._split(split)["shards"]:
            yield {"clips": self._load(s["clips"], mmap=True), "labels": self._load(s["labels"]),
                   "extra": self._load(s["extra"])}

    def column(self, split: str, key: str) -> np.ndarray:
        """One per-row array of a split (``clips``, ``labels`` or ``extra``), shards concatenated; the clips of a
        one-shard split stay memory-mapped (several shards are read into one array)."""
        if key not in COLUMNS:
            raise KeyError(key)
        parts = [self._load(s[key], mmap=key == "clips") for s in self._split(split)["shards"]]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            tail = {"clips": (self.frames, self.channels, self.height, self.width), "labels": (),
                    "extra": (len(self.label_sets),)}[key]
            return np.zeros((0, *tail), dtype=np.uint8 if key == "clips" else np.int64)
        return np.concatenate(parts)

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The per-row records (``rows.json``) of a split."""
        return self.shard_records(split, "rows")

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(clips uint8 (N, T, C, H, W), main labels int64 (N,)) of a split."""
        return self.column(split, "clips"), self.column(split, "labels")


__all__ = ["FORMAT", "VideoDataset", "write_video_dataset"]
