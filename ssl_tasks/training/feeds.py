"""What the training loop eats, and the parts of it every modality shares.

A modality's ``feed(job)`` (``core/modality.Modality.feed``; ``modalities/<name>/feed.py``) gives the loop a
``Feed``: the data spec its objective is built with, the encoder, and an epoch's batches. The image, text and
image–text feeds live in their modality packages; here are the loop's side of them (``Feed``, ``open_feed``) and
what they share: ``stream_rows`` (seeded, rank-strided full batches of in-memory rows) and ``trim_padding``.

Labels are never opened, and epoch ``e`` on rank ``r`` of ``W`` sees a seeded permutation's every ``W``-th row in
full batches, so all ranks take the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from ssl_tasks.core.errors import UserError


class Feed(Protocol):
    """A modality's training data for one job: ``spec`` (the objective's data spec), ``modality`` (the one the
    objective trains in), the training rows' count, the encoder, and one epoch's batches for a rank."""

    spec: Any
    modality: str

    def count(self) -> int: ...

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module: ...

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[Any]: ...


def steps_per_epoch(feed: Any, batch_size: int, world_size: int) -> int:
    """Optimisation steps in one epoch: full batches of ``batch_size`` per rank, unless the feed says otherwise
    (``feed.steps_per_epoch``: a full-batch graph is one step whatever the batch size)."""
    own = getattr(feed, "steps_per_epoch", None)
    return int(own(batch_size, world_size)) if own is not None else feed.count() // (batch_size * world_size)


def trim_padding(rows: np.ndarray, pad_id: int) -> np.ndarray:
    """Drop the trailing columns that are padding in every row: short sentences cost only their own length."""
    used = np.flatnonzero((rows != pad_id).any(axis=0))
    return rows[:, : used[-1] + 1] if len(used) else rows[:, :1]


BUCKET_BATCHES = 50  # length bucketing sorts rows within windows of this many batches


def stream_rows(rows: np.ndarray, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                lengths: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Shuffled full batches of in-memory rows: a permutation from ``(seed, epoch)``, rank-strided.

    With ``lengths`` (padded rows), rows of similar length are batched together: within each window of
    ``BUCKET_BATCHES`` batches of the permutation, rows are sorted by length, cut into batches, and the
    batches shuffled, so a short sentence is not padded to the longest one in the corpus (on SST-2 this
    cuts the tokens computed per epoch about fourfold).
    """
    n_batches = len(rows) // (batch_size * world_size)
    if n_batches == 0:
        raise UserError(f"the training split has {len(rows)} rows: too few for batch_size={batch_size} x "
                        f"{world_size} workers")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(rows))[rank::world_size][: n_batches * batch_size]
    batches = order.reshape(n_batches, batch_size)
    if lengths is not None:
        window = BUCKET_BATCHES * batch_size
        parts = [order[s : s + window] for s in range(0, len(order), window)]
        parts = [p[np.argsort(lengths[p], kind="stable")] for p in parts]
        batches = np.concatenate(parts).reshape(n_batches, batch_size)[rng.permutation(n_batches)]
    for b in batches:
        yield rows[np.sort(b)]


def open_feed(job: Any) -> Feed:
    """The feed of a ``TrainJob``: from the modality the objective trains in on the dataset's modality."""
    from ssl_tasks.core.modality import get_modality, modality_of, trains_in
    from ssl_tasks.objectives import OBJECTIVES

    data = modality_of(Path(job.data_dir))
    return get_modality(trains_in(OBJECTIVES.get(job.objective), data.name)).feed(job)
