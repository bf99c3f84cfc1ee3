"""The canonical image–caption pair dataset: image shards, caption shards, label shards, a manifest.

Layout of a dataset directory::

    manifest.json
    train/shard-00000.images.npy    uint8 (N, C, H, W)
    train/shard-00000.pairs.jsonl   N lines, one canonical JSON object per image:
                                    {"captions": [str, ...], "error": null | str,
                                     "image": str, "sha256": null | str}
    train/shard-00000.labels.npy    int64 (N,)   (-1 = unlabeled)
    test/...

Line ``i`` of a ``pairs.jsonl`` shard describes image ``i`` of the ``images.npy`` shard next to it:
its captions in stored order, the image's path (relative to the source root, or its tar member
name), the sha256 of the source image bytes (null when they could not be read) and ``error``
(null, or why the row is unusable: its image is then all zeros). Ingest records bad rows instead of
failing, and validation reports them. Canonical JSON (sorted keys, no spaces) and ``.npy`` without
timestamps make a dataset byte-identical when ingested twice from the same input.

:class:`PairDataset` is an :class:`~ssl_tasks.modalities.image.shards.ImageDataset`: image readers (``load``,
``shards``, ``iter_batches``, ``stream_epoch``) work on it unchanged; ``records``, ``captions``
and ``iter_texts`` add the text side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import shard_entry, split_summary
from ssl_tasks.modalities.image.shards import ImageDataset, write_image_format
from ssl_tasks.modalities.text.shards import read_json_lines

FORMAT = "ssl_tasks.pair_shards/v1"
_RECORD_KEYS = {"captions", "error", "image", "sha256"}
#: A stored image path that is absolute (``/x``, ``\\x``, ``C:x``) or has a ``..`` part could point
#: outside the dataset root: ingest never opens one, and validation flags it (``re.search`` semantics).
UNSAFE_PATH = r"^(?:[/\\]|[A-Za-z]:)|(?:^|[/\\])\.\.(?:[/\\]|$)"
_UNSAFE = re.compile(UNSAFE_PATH)


def unsafe_path(path: str) -> bool:
    """Whether ``path`` is absolute or has a ``..`` part (``/`` and ``\\`` both count as separators)."""
    return _UNSAFE.search(path) is not None


@dataclass(frozen=True)
class PairRecord:
    """The text side of one image: its captions, where it came from, and why it is unusable (if so)."""

    captions: tuple[str, ...]
    image: str  # path relative to the source root, or the tar member name
    sha256: str | None  # of the source image bytes; None when they could not be read
    error: str | None  # None, or a readable reason (the stored image is then all zeros)

    def __post_init__(self) -> None:
        object.__setattr__(self, "captions", tuple(self.captions))  # a list is accepted, a tuple stored

    def to_json(self) -> dict[str, Any]:
        return {"captions": list(self.captions), "error": self.error, "image": self.image, "sha256": self.sha256}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> PairRecord:
        """Parse one ``pairs.jsonl`` object strictly; ``where`` (``file:line``) names it in errors."""
        if not isinstance(obj, dict) or set(obj) != _RECORD_KEYS:
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise UserError(f"{where}: expected an object with keys {sorted(_RECORD_KEYS)}, got {keys}")
        caps = obj["captions"]
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise UserError(f"{where}: 'captions' must be a list of strings")
        if not isinstance(obj["image"], str):
            raise UserError(f"{where}: 'image' must be a string")
        for key in ("sha256", "error"):
            if obj[key] is not None and not isinstance(obj[key], str):
                raise UserError(f"{where}: {key!r} must be a string or null")
        return cls(tuple(caps), obj["image"], obj["sha256"], obj["error"])


@dataclass(frozen=True)
class PairSplit:
    """One split as the writer consumes it: images uint8 (N, C, H, W), N records, N int labels (-1 = unlabeled)."""

    images: np.ndarray
    records: Sequence[PairRecord]
    labels: np.ndarray


def _encode(split: str, i: int, record: PairRecord) -> bytes:
    """One canonical JSON line; a caption that is not valid UTF-8 (lone surrogates) is a UserError."""
    if not isinstance(record, PairRecord):
        raise UserError(f"split {split!r} record {i}: expected a PairRecord, got {type(record).__name__}")
    try:
        line = json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return (line + "\n").encode("utf-8")
    except (TypeError, ValueError) as e:
        raise UserError(f"split {split!r} record {i} ({record.image}): not storable as JSON ({e})") from None
    except UnicodeEncodeError as e:
        raise UserError(f"split {split!r} record {i} ({record.image}): not encodable as UTF-8 ({e.reason})") from None


def write_pair_dataset(
    out: Path,
    splits: dict[str, PairSplit],
    *,
    image_shape: Sequence[int],
    label_names: Sequence[str],
    source: dict[str, Any],
    shard_size: int = 8192,
) -> dict[str, Any]:
    """Write splits as image/pair/label shards + manifest into ``out`` atomically; return the manifest."""
    return write_image_format(out, FORMAT, "image_text", splits, sum(len(s.records) for s in splits.values()),
                              "image-caption pairs", image_shape, label_names, source, shard_size, _write_split)


def _check_split(split: str, data: PairSplit, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(data.images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
        raise UserError(
            f"split {split!r}: expected uint8 images of shape (N, {', '.join(map(str, shape))}), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    labels = np.asarray(data.labels, dtype=np.int64).reshape(-1)
    if not len(images) == len(data.records) == len(labels):
        raise UserError(
            f"split {split!r}: {len(images)} images, {len(data.records)} records and {len(labels)} labels "
            "(one record and one label per image expected)"
        )
    return images, labels


def _write_split(
    root: Path, split: str, data: PairSplit, shape: tuple[int, ...], n_classes: int, shard_size: int
) -> dict[str, Any]:
    images, labels = _check_split(split, data, shape)
    records = list(data.records)
    (root / split).mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    for start in range(0, len(records), shard_size):
        stem = f"{split}/shard-{len(shards):05d}"
        end = start + shard_size
        files = {"images": f"{stem}.images.npy", "pairs": f"{stem}.pairs.jsonl", "labels": f"{stem}.labels.npy"}
        np.save(root / files["images"], np.ascontiguousarray(images[start:end]))
        with open(root / files["pairs"], "wb") as f:
            f.write(b"".join(_encode(split, start + i, r) for i, r in enumerate(records[start:end])))
        np.save(root / files["labels"], np.ascontiguousarray(labels[start:end]))
        shards.append(shard_entry(root, files, len(records[start:end])))
    return {
        **split_summary(labels, n_classes),
        "n_captions": sum(len(r.captions) for r in records),
        "shards": shards,
    }


class PairDataset(ImageDataset):
    """Read access to an ingested image–caption dataset: the image side is an ImageDataset's."""

    modality = "image_text"
    format: ClassVar[str] = FORMAT
    shard_files = ("images", "pairs", "labels")

    def _read_records(self, rel: str, count: int) -> list[PairRecord]:
        path = self.root / rel
        records = [PairRecord.from_json(obj, where) for where, obj in read_json_lines(path, "a JSON object")]
        if len(records) != count:
            raise UserError(f"{path}: {len(records)} records but the manifest says the shard holds {count} images")
        return records

    def iter_records(self, split: str) -> Iterator[list[PairRecord]]:
        """The records of each shard of ``split``, in stored order (one shard in memory at a time)."""
        for s in self._split(split)["shards"]:
            yield self._read_records(s["pairs"], int(s["count"]))

    def records(self, split: str) -> list[PairRecord]:
        """One :class:`PairRecord` per image of ``split``, aligned with ``load(split)``."""
        return [r for shard in self.iter_records(split) for r in shard]

    def captions(self, split: str) -> list[list[str]]:
        """The captions of each image of ``split`` (a list per image, aligned with ``load(split)``)."""
        return [list(r.captions) for r in self.records(split)]

    def iter_texts(self, split: str) -> Iterator[str]:
        """Every caption of every image in stored order (tokenizer training); label files are never opened."""
        for shard in self.iter_records(split):
            for r in shard:
                yield from r.captions
