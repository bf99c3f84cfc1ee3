"""What every dataset format shares: the reader base (:class:`ManifestDataset`) and the shard writers' helpers.

A dataset directory holds a ``manifest.json`` (canonical JSON: its ``format``, ``modality``, ``label_names``,
``source`` and, per split, counts and shards with the sha256 of each shard file) plus the shard files. Each
modality's format lives in its package (``ssl_tasks.modalities.<name>.shards``); the helpers below keep the
writers' argument checks, split summaries, shard files (:func:`save_columns`), shard entries and atomic write in
one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, sha256_file, write_json_atomic

UNLABELED = -1


def check_write_args(shard_size: Any, n_samples: int, source: Mapping[str, Any], what: str) -> int:
    """``shard_size`` as an int, or a UserError unless it is an integer >= 1 and the splits hold ``what``."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise UserError(f"shard_size must be an integer >= 1, got {shard_size!r}")
    if n_samples == 0:
        raise UserError(f"dataset from source {source.get('name')!r} is empty: no {what} found")
    return int(shard_size)


def write_manifest_dataset(out: Path, manifest: dict[str, Any], splits: Mapping[str, Any],
                           write_split: Callable[[Path, str, Any], dict[str, Any]]) -> dict[str, Any]:
    """Write every split with ``write_split(root, split, data)`` (its manifest entry) and the manifest into ``out``
    atomically (all or nothing); return the manifest."""
    with atomic_dir(out) as tmp:
        for split, data in splits.items():
            manifest["splits"][split] = write_split(tmp, split, data)
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def save_columns(root: Path, stem: str, arrays: Mapping[str, np.ndarray],
                 records: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write one shard's columns under ``root``: each array as ``<stem>.<key>.npy`` (C order, ``np.save``, no
    pickle), each list of per-row records as ``<stem>.<key>.json`` (canonical JSON); an empty ``stem`` names the
    files ``<key>.npy`` / ``<key>.json``. Return key -> path relative to ``root`` (a shard entry's files), arrays
    first, in the order given. The writers call it inside :func:`write_manifest_dataset`'s atomic directory."""
    prefix = f"{stem}." if stem else ""
    files: dict[str, str] = {}
    for key, array in arrays.items():
        files[key] = f"{prefix}{key}.npy"
        np.save(root / files[key], np.ascontiguousarray(array), allow_pickle=False)
    for key, rows in (records or {}).items():
        files[key] = f"{prefix}{key}.json"
        write_json_atomic(root / files[key], rows)
    return files


def shard_entry(root: Path, files: dict[str, str], count: int) -> dict[str, Any]:
    """A shard's manifest entry: its files (key -> path relative to ``root``), sample count and sha256 per file."""
    return {**files, "count": int(count), "sha256": {key: sha256_file(root / rel) for key, rel in files.items()}}


def split_summary(labels: np.ndarray, n_classes: int) -> dict[str, Any]:
    """A split's manifest counts: samples, labelled samples and samples per class (-1, unlabeled, not counted)."""
    counts = np.bincount(labels[labels >= 0], minlength=n_classes) if n_classes else np.zeros(0)
    return {
        "count": len(labels),
        "labeled": int((labels >= 0).sum()),
        "class_counts": [int(c) for c in counts],
    }


class ManifestDataset:
    """What every dataset reader offers from its manifest: label names, splits and their counts."""

    root: Path
    manifest: dict[str, Any]
    shard_files: tuple[str, ...] = ("images", "labels")  # the files of one shard, keys of its manifest entry

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["label_names"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["label_names"])

    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def count(self, split: str) -> int:
        return int(self._split(split)["count"])

    def _split(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise UserError(f"dataset {self.root} has no split {split!r}; splits: {self.splits()}") from None

    def _load(self, rel: str, mmap: bool = False) -> np.ndarray:
        """A shard's ``.npy`` file (``rel`` to the root), memory-mapped if asked, never unpickled; unreadable: a
        ``UserError`` saying to re-ingest."""
        try:
            return np.load(self.root / rel, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{self.root / rel}: unreadable ({e}); re-ingest the dataset") from None

    def shard_records(self, split: str, key: str) -> list[dict[str, Any]]:
        """The per-row JSON records of a split (each shard's file under ``key``), shards concatenated."""
        out: list[dict[str, Any]] = []
        for s in self._split(split)["shards"]:
            try:
                out.extend(json.loads((self.root / s[key]).read_text()))
            except (OSError, ValueError) as e:
                raise UserError(f"{self.root / s[key]}: unreadable ({e}); re-ingest the dataset") from None
        return out

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest."""
        for split in self.splits():
            for s in self._split(split)["shards"]:
                for key in self.shard_files:
                    p = self.root / s[key]
                    if not p.is_file():
                        raise UserError(f"missing shard file {p}")
                    if sha256_file(p) != s["sha256"][key]:
                        raise UserError(f"shard {p} does not match the sha256 in the manifest (corrupted?)")
