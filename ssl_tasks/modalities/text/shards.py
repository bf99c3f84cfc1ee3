"""The canonical text dataset: JSON-lines text shards, ``.npy`` label shards, a ``manifest.json``.

Layout of a dataset directory::

    manifest.json
    train/shard-00000.texts.jsonl   one JSON string per line (UTF-8, "\\n" line ends)
    train/shard-00000.labels.npy    int64 (N,)   (-1 = unlabeled)
    test/...

One JSON string per line keeps any text (newlines, tabs, U+2028) on a single physical line,
so shards stream line by line. No timestamps anywhere plus canonical JSON makes a dataset
byte-identical when ingested twice from the same input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import read_manifest
from ssl_tasks.data.shards import (
    ManifestDataset,
    check_write_args,
    shard_entry,
    split_summary,
    write_manifest_dataset,
)

FORMAT = "ssl_tasks.text_shards/v1"


@dataclass(frozen=True)
class TextSplit:
    """One split as the writer consumes it: texts and their int labels (-1 = unlabeled)."""

    texts: list[str]
    labels: np.ndarray


def write_text_dataset(
    out: Path,
    splits: dict[str, TextSplit],
    *,
    label_names: Sequence[str],
    source: dict[str, Any],
    shard_size: int = 8192,
) -> dict[str, Any]:
    """Write splits as shards + manifest into ``out`` atomically; return the manifest."""
    size = check_write_args(shard_size, sum(len(s.texts) for s in splits.values()), source, "texts")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "modality": "text",
        "label_names": list(label_names),
        "source": source,
        "splits": {},
    }
    return write_manifest_dataset(
        out, manifest, splits, lambda root, split, data: _write_split(root, split, data, len(label_names), size)
    )


def _encode(split: str, i: int, text: object) -> bytes:
    if not isinstance(text, str):
        raise UserError(f"split {split!r} text {i}: expected a string, got {type(text).__name__}")
    try:
        return (json.dumps(text, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: not representable in UTF-8
        raise UserError(f"split {split!r} text {i}: not encodable as UTF-8 ({e.reason})") from None


def _write_split(root: Path, split: str, data: TextSplit, n_classes: int, shard_size: int) -> dict[str, Any]:
    labels = np.asarray(data.labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(data.texts):
        raise UserError(f"split {split!r}: {len(labels)} labels but {len(data.texts)} texts")
    (root / split).mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    for start in range(0, len(labels), shard_size):
        stem = f"{split}/shard-{len(shards):05d}"
        texts = data.texts[start : start + shard_size]
        with open(root / f"{stem}.texts.jsonl", "wb") as f:
            f.write(b"".join(_encode(split, start + i, t) for i, t in enumerate(texts)))
        np.save(root / f"{stem}.labels.npy", np.ascontiguousarray(labels[start : start + shard_size]))
        shards.append(shard_entry(root, {"texts": f"{stem}.texts.jsonl", "labels": f"{stem}.labels.npy"}, len(texts)))
    return {
        **split_summary(labels, n_classes),
        "n_chars": sum(len(t) for t in data.texts),
        "shards": shards,
    }


def read_json_lines(path: Path, what: str) -> list[tuple[str, Any]]:
    """(``path:line``, parsed value) of every line of a JSON-lines shard; a UserError names a bad line."""
    out: list[tuple[str, Any]] = []
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    out.append((f"{path}:{n}", json.loads(line)))
                except ValueError as e:  # also invalid UTF-8
                    raise UserError(f"{path}:{n}: not {what} ({e})") from None
    except OSError as e:
        raise UserError(f"cannot read shard {path}: {e}") from None
    return out


class TextDataset(ManifestDataset):
    """Read access to an ingested text dataset directory (shards are read one at a time)."""

    modality = "text"
    shard_files = ("texts", "labels")

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("format") != FORMAT:
            raise UserError(
                f"{self.root / 'manifest.json'}: unsupported format {self.manifest.get('format')!r} (expected {FORMAT})"
            )


    def _read_texts(self, rel: str) -> list[str]:
        texts: list[str] = []
        for where, text in read_json_lines(self.root / rel, "a JSON string"):
            if not isinstance(text, str):
                raise UserError(f"{where}: expected a JSON string, got {type(text).__name__}")
            texts.append(text)
        return texts

    def iter_shards(self, split: str) -> Iterator[tuple[list[str], np.ndarray]]:
        """(texts, int64 labels) per shard, in stored order; one shard in memory at a time."""
        for k, s in enumerate(self._split(split)["shards"]):
            texts = self._read_texts(s["texts"])
            try:
                labels = np.load(self.root / s["labels"], allow_pickle=False)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read shard {self.root / s['labels']}: {e}") from None
            if labels.ndim != 1 or len(labels) != len(texts) or labels.dtype.kind not in "iu":
                raise UserError(
                    f"dataset {self.root}: split {split!r} shard {k}: {len(texts)} texts but labels "
                    f"{labels.dtype} {tuple(labels.shape)} (one integer label per text expected)"
                )
            yield texts, labels.astype(np.int64)

    def iter_texts(self, split: str) -> Iterator[str]:
        """Texts in stored order, streamed shard by shard; label files are never opened (training reads this)."""
        for s in self._split(split)["shards"]:
            yield from self._read_texts(s["texts"])

    def load(self, split: str) -> tuple[list[str], np.ndarray]:
        """The whole split in memory: (texts, int64 labels)."""
        texts: list[str] = []
        labels = [np.zeros(0, dtype=np.int64)]
        for t, lab in self.iter_shards(split):
            texts.extend(t)
            labels.append(lab)
        return texts, np.concatenate(labels)
