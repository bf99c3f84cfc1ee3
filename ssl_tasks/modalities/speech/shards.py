"""The speech dataset format, ``ssl-tasks-speech/v1``: fixed-width waveform shards plus per-row columns.

Layout (plain ``.npy``, no pickles; memory-mapped when read, like the image format)::

    manifest.json
    train/shard-00000.waves.npy    int16 (or float16) (N, T): mono clips at ``sample_rate``, zero-padded to T
    train/shard-00000.lengths.npy  int64 (N,)  valid samples of each row (<= T)
    train/shard-00000.labels.npy   int64 (N,)  main label (-1 = unlabelled), e.g. FSDD's digit
    train/shard-00000.groups.npy   int64 (N,)  group (-1 = none), e.g. FSDD's speaker
    train/shard-00000.clips.json   per row: id (the source path), sha256 of the stored samples, the file's own
                                   sample rate, channels and duration, clipped share, RMS level (dBFS)
    test/...

int16 rows hold ``round(x * 32767)`` of the float clip (clipped to full scale); float16 rows the float itself.
``.npy`` plus canonical JSON make two ingests of the same input byte-identical; ``verify`` re-checks every file's
sha256 against the manifest.
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

FORMAT = "ssl-tasks-speech/v1"
NAME = "speech"
INT16_SCALE = 32767.0
SILENT_DB = -200.0  # the RMS level recorded for an empty or all-zero clip


def rms_db(wave: np.ndarray) -> float:
    """The clip's RMS level in dB relative to full scale (``SILENT_DB`` for nothing or digital silence)."""
    if len(wave) == 0:
        return SILENT_DB
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return max(SILENT_DB, 20.0 * np.log10(rms)) if rms > 0 else SILENT_DB


def encode(wave: np.ndarray, dtype: str) -> np.ndarray:
    """A float clip as stored: int16 (scaled, rounded, clipped to full scale) or float16."""
    if dtype == "int16":
        return np.clip(np.rint(wave.astype(np.float64) * INT16_SCALE), -32768, 32767).astype(np.int16)
    return wave.astype(np.float16)


def to_float(rows: np.ndarray) -> np.ndarray:
    """Stored rows (int16 or float16) as float32 in the clip's own scale."""
    if rows.dtype == np.int16:
        return rows.astype(np.float32) / np.float32(INT16_SCALE)
    return rows.astype(np.float32)


def write_speech_dataset(out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
    """Write a ``sources.AudioSourceResult`` at ``out`` atomically; return the manifest."""
    n = sum(len(s.ids) for s in result.splits.values())
    size = check_write_args(shard_size, n, source, "audio clips")
    width, dtype = int(result.num_samples), str(result.dtype)
    if dtype not in ("int16", "float16"):
        raise UserError(f"speech shards store int16 or float16 waveforms, not {dtype!r}")
    rates = [int(r) for sp in result.splits.values() for r in sp.source_rate if r > 0]
    manifest = {"format": FORMAT, "modality": NAME, "sample_rate": int(result.sample_rate), "num_samples": width,
                # the lowest rate among the files: above half of it the stored audio holds nothing (upsampled)
                "source_sample_rate": min(rates) if rates else int(result.sample_rate),
                "dtype": dtype, "label_names": list(result.label_names), "group_names": list(result.group_names),
                "source": source, "splits": {}}

    def write_split(root: Path, split: str, data: Any) -> dict[str, Any]:
        (root / split).mkdir(parents=True, exist_ok=True)
        shards = []
        for start in range(0, len(data.ids), size):
            stop = min(start + size, len(data.ids))
            waves = np.zeros((stop - start, width), dtype=np.int16 if dtype == "int16" else np.float16)
            lengths = np.zeros(stop - start, dtype=np.int64)
            rows = []
            for j, i in enumerate(range(start, stop)):
                w = np.asarray(data.waves[i], dtype=np.float32)[:width]
                stored = encode(w, dtype)
                waves[j, : len(stored)] = stored
                lengths[j] = len(stored)
                rows.append({"id": data.ids[i], "sha256": hashlib.sha256(stored.tobytes()).hexdigest(),
                             "source_rate": int(data.source_rate[i]), "source_channels": int(data.source_channels[i]),
                             "source_seconds": round(float(data.source_seconds[i]), 6),
                             "clip_fraction": round(float(data.clip_fraction[i]), 8),
                             "rms_db": round(rms_db(w), 4)})
            columns = {"waves": waves, "lengths": lengths,
                       "labels": np.asarray(data.labels[start:stop], dtype=np.int64),
                       "groups": np.asarray(data.groups[start:stop], dtype=np.int64)}
            files = save_columns(root, f"{split}/shard-{len(shards):05d}", columns, {"clips": rows})
            shards.append(shard_entry(root, files, stop - start))
        summary = split_summary(np.asarray(data.labels, dtype=np.int64), len(result.label_names))
        return {**summary, "seconds": round(float(sum(min(len(w), width) for w in data.waves)) / result.sample_rate, 3),
                "shards": shards}

    return write_manifest_dataset(out, manifest, result.splits, write_split)


class SpeechDataset(ManifestDataset):
    """An ingested speech dataset: memory-mapped waveform shards and their per-row columns."""

    modality = NAME
    shard_files = ("waves", "lengths", "labels", "groups", "clips")

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{self.root}: format {self.manifest.get('format')!r} is not {FORMAT}")

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def band_limit(self) -> float:
        """Half the lowest sample rate the clips had before resampling (Hz): where their spectra end."""
        return min(self.sample_rate, int(self.manifest.get("source_sample_rate", self.sample_rate))) / 2

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def group_names(self) -> list[str]:
        return list(self.manifest.get("group_names", []))

    def shards(self, split: str) -> Iterator[dict[str, np.ndarray]]:
        """Per shard: ``waves`` (memory-mapped), ``lengths``, ``labels``, ``groups``."""
        for s in self._split(split)["shards"]:
            yield {"waves": self._load(s["waves"], mmap=True), "lengths": self._load(s["lengths"]),
                   "labels": self._load(s["labels"]), "groups": self._load(s["groups"])}

    def column(self, split: str, key: str) -> np.ndarray:
        """One per-row array of a split (``waves`` read into memory), shards concatenated; reads that column's files
        only, so training (``waves``, ``lengths``) never opens a label file."""
        if key not in ("waves", "lengths", "labels", "groups"):
            raise KeyError(key)
        parts = [np.asarray(self._load(s[key], mmap=key == "waves")) for s in self._split(split)["shards"]]
        return np.concatenate(parts) if parts else np.zeros(0)

    def clips(self, split: str) -> list[dict[str, Any]]:
        """The per-row records (``clips.json``) of a split."""
        return self.shard_records(split, "clips")

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(stored waveforms (N, T), labels) of a split."""
        return self.column(split, "waves"), self.column(split, "labels")


__all__ = ["FORMAT", "SpeechDataset", "encode", "rms_db", "to_float", "write_speech_dataset"]
