"""What the training loop eats on speech: batches of fixed-width waveforms, their lengths and, for objectives that
predict frame targets (HuBERT), the ``tokenizer@<dataset>`` stage's cluster ids.

A batch is ``(wave, lengths)`` or ``(wave, lengths, targets)`` (the contract in ``modalities/speech/frames.py``'s
``SpeechDataSpec``): ``wave`` float32 (B, T), each row divided by its own peak (so in [-1, 1]) and zero after its
``lengths``; ``targets`` int64 (B, conv_frames(T)), ``IGNORE`` (-100) on frames past a row's valid frames. Epoch
``e`` on rank ``r`` of ``W`` is ``training.feeds.stream_rows`` over the row indices: a seeded permutation from
``(seed, e)``, every ``W``-th row, full batches. Only the waveform shards (and the targets) are read: never labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.speech.frames import SpeechDataSpec
from ssl_tasks.modalities.speech.shards import SpeechDataset, to_float

NAME = "speech"
IGNORE = -100  # the target of a frame past a clip's end (cross-entropy's ignore_index)


def peak_normalise(rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Stored rows (B, T) as float32, each divided by its peak over its valid samples, zero past ``lengths``."""
    x = to_float(np.asarray(rows))  # (B, T)
    valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (B, T)
    x = np.where(valid, x, np.float32(0))
    peak = np.abs(x).max(axis=1, keepdims=True)  # (B, 1)
    return np.ascontiguousarray(x / np.where(peak > 0, peak, np.float32(1)), dtype=np.float32)


def needs_targets(objective: type) -> bool:
    """Whether a run of ``objective`` reads frame targets (HuBERT's class attribute ``needs_targets``)."""
    return bool(getattr(objective, "needs_targets", False))


def load_targets(tokenizer_dir: Path, split: str, ds: SpeechDataset) -> tuple[np.ndarray, int]:
    """The target rows (N, conv_frames(T)) of ``split`` and the number of clusters, checked against ``ds``."""
    import json

    from ssl_tasks.modalities.speech.frames import conv_frames

    tokenizer_dir = Path(tokenizer_dir)
    meta_file, file = tokenizer_dir / "tokenizer.json", tokenizer_dir / "targets" / f"{split}.npy"
    if not meta_file.is_file() or not file.is_file():
        raise UserError(f"{tokenizer_dir} holds no speech targets for split {split!r}: run the "
                        "tokenizer@<dataset> stage first (dvc repro)")
    meta = json.loads(meta_file.read_text())
    targets = np.load(file, allow_pickle=False)
    want = (ds.count(split), conv_frames(ds.num_samples))
    if targets.shape != want or meta.get("data_hash") not in (None, ds_hash(ds)):
        raise UserError(f"{file}: targets of shape {targets.shape} for data of {want} rows x frames, or of another "
                        "ingest of the dataset; rerun the tokenizer stage")
    return targets.astype(np.int64), int(meta["num_clusters"])


def ds_hash(ds: SpeechDataset) -> str:
    """What ties targets to one ingest: the sha256 of the dataset's manifest."""
    import hashlib

    return hashlib.sha256((ds.root / "manifest.json").read_bytes()).hexdigest()


@dataclass
class SpeechFeed:
    waves: np.ndarray  # (N, T) stored rows (int16 or float16)
    lengths: np.ndarray  # (N,) int64
    targets: np.ndarray | None  # (N, F) int64 or None
    spec: SpeechDataSpec
    modality: str = NAME

    def count(self) -> int:
        return len(self.waves)

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        return ENCODERS.get(name)(**kwargs)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows ``idx`` as the contract's batch tuple."""
        lengths = np.ascontiguousarray(self.lengths[idx], dtype=np.int64)
        wave = peak_normalise(self.waves[idx], lengths)
        if self.targets is None:
            return wave, lengths
        return wave, lengths, np.ascontiguousarray(self.targets[idx])

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int,
              world_size: int) -> Iterator[tuple[np.ndarray, ...]]:
        from ssl_tasks.training.feeds import stream_rows

        rows = np.arange(len(self.waves))
        for idx in stream_rows(rows, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size):
            yield self.batch(idx)


def speech_feed(job: Any) -> SpeechFeed:
    """The training split of a ``TrainJob``'s speech dataset, with targets when its objective needs them."""
    from ssl_tasks.objectives import OBJECTIVES

    ds = SpeechDataset(Path(job.data_dir))
    waves = np.ascontiguousarray(ds.column("train", "waves"))
    lengths = ds.column("train", "lengths").astype(np.int64)
    targets, k = None, 0
    if needs_targets(OBJECTIVES.get(job.objective)):
        if not job.tokenizer:
            raise UserError(f"runs.{job.run}: {job.objective} predicts frame targets: the job needs the dataset's "
                            "tokenizer@<dataset> stage")
        targets, k = load_targets(Path(job.tokenizer).parent, "train", ds)
    return SpeechFeed(waves, lengths, targets, SpeechDataSpec(ds.sample_rate, ds.num_samples, k))


__all__ = ["IGNORE", "SpeechFeed", "load_targets", "needs_targets", "peak_normalise", "speech_feed"]
