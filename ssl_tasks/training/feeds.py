"""What the training loop eats, per modality: a data spec for the objective, the encoder, and epoch batches.

- images: uint8 (B, C, H, W) batches streamed from memory-mapped shards (``data/shards.stream_epoch``);
- image–text pairs: the training images in memory and every caption tokenized once into padded rows; each
  epoch draws one of an image's captions per step (``PairFeed``);
- text: the training split's texts tokenized once by the dataset's tokenizer (the ``tokenizer@<dataset>``
  stage) into int64 rows of ``max_len`` tokens, padded or packed as the objective's ``layout`` asks. Token
  rows live in memory (16 MiB for 65,000 rows of 64 tokens); the texts are read shard by shard.

Either way labels are never opened, and epoch ``e`` on rank ``r`` of ``W`` sees a seeded permutation's every
``W``-th row in full batches, so all ranks take the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import ImageDataset, stream_epoch
from ssl_tasks.objectives.base import DataSpec, PairDataSpec, TextDataSpec

DEFAULT_MAX_LEN = 64


@dataclass
class ImageFeed:
    ds: ImageDataset
    spec: DataSpec
    modality: str = "image"

    def count(self) -> int:
        return self.ds.count("train")

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        from ssl_tasks.modalities.image.encoders import build_encoder

        return build_encoder(name, self.spec.channels, self.spec.image_size, **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[np.ndarray]:
        return stream_epoch(self.ds, "train", batch_size=batch_size, seed=seed, epoch=epoch, rank=rank,
                            world_size=world_size)


@dataclass
class TextFeed:
    rows: np.ndarray  # (N, L) int64 token ids
    spec: TextDataSpec
    layout: str = "pack"
    modality: str = "text"

    def count(self) -> int:
        return len(self.rows)

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        from ssl_tasks.modalities.text.encoders import build_text_encoder

        return build_text_encoder(name, self.spec.vocab_size, self.spec.pad_id, **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[np.ndarray]:
        lengths = (self.rows != self.spec.pad_id).sum(1) if self.layout == "pad" else None
        for rows in stream_rows(self.rows, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank,
                                world_size=world_size, lengths=lengths):
            yield trim_padding(rows, self.spec.pad_id)


@dataclass
class PairFeed:
    """Image–caption pairs: ``images`` (N, C, H, W) uint8 in memory, ``captions`` (M, L) token rows of every
    caption, ``first``/``n_captions`` (N,) where image i's captions start and how many it has."""

    images: np.ndarray
    captions: np.ndarray
    first: np.ndarray
    n_captions: np.ndarray
    spec: PairDataSpec
    modality: str = "image_text"
    words: np.ndarray | None = None  # (M, L) word index of each caption token, -1 elsewhere (word dropout)
    word_dropout: float = 0.0

    def count(self) -> int:
        return len(self.images)

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        from ssl_tasks.modalities.image.encoders import build_encoder

        return build_encoder(name, self.spec.image.channels, self.spec.image.image_size, **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[
            tuple[np.ndarray, np.ndarray]]:
        """(images (B, C, H, W), captions (B, L')) batches; one caption per image, drawn from (seed, epoch, rank),
        its words dropped afresh with probability ``word_dropout`` when that is set."""
        rng = np.random.default_rng([seed, epoch, rank, 1])
        index = np.arange(len(self.images)).reshape(-1, 1)
        pad = self.spec.text.pad_id
        for idx in stream_rows(index, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank,
                               world_size=world_size):
            i = idx[:, 0]
            pick = self.first[i] + (rng.random(len(i)) * self.n_captions[i]).astype(np.int64)
            rows = self.captions[pick]
            if self.words is not None:  # set exactly when word_dropout > 0
                rows = drop_words(rows, self.words[pick], self.word_dropout, rng, pad)
            yield self.images[i], trim_padding(rows, pad)


def drop_words(rows: np.ndarray, words: np.ndarray, p: float, rng: np.random.Generator, pad_id: int) -> np.ndarray:
    """Drop each word of each padded row with probability ``p``, whole words at a time, keeping at least one.

    ``rows`` (B, L) ``[CLS] tokens [SEP] [PAD]...``; ``words`` (B, L) the word index of each token (-1 for
    specials and padding). Kept tokens move left in order, ``[CLS]``/``[SEP]`` stay, the rest is padding: a
    caption "flag europe sign" may come out as "flag sign" or "europe", so single-word prompts at zero-shot
    time are no longer out of distribution.
    """
    b = len(rows)
    n_words = words.max(axis=1, initial=-1) + 1  # (B,)
    keep_word = rng.random((b, max(1, int(n_words.max(initial=0))))) >= p  # (B, W)
    keep_word &= np.arange(keep_word.shape[1]) < n_words[:, None]
    lost = np.flatnonzero((n_words > 0) & ~keep_word.any(axis=1))
    keep_word[lost, (rng.random(len(lost)) * n_words[lost]).astype(np.int64)] = True
    keep = np.where(words >= 0, np.take_along_axis(keep_word, words.clip(0), axis=1), rows != pad_id)  # (B, L)
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(rows, order, axis=1)
    out[~np.take_along_axis(keep, order, axis=1)] = pad_id
    return out


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


def text_layout(objective_config: Any) -> str:
    """How a text objective wants its rows: ``pack`` or ``pad`` (its config's ``layout``; ``pad`` without one)."""
    return getattr(objective_config, "layout", "pad")


def text_rows(data_dir: Path, tokenizer_path: str | Path, *, split: str, layout: str, max_len: int) -> tuple[
        np.ndarray, TextDataSpec]:
    """Tokenize a split's texts into (N, max_len) rows; also the data spec of the tokenizer."""
    from ssl_tasks.modalities.text.batching import make_rows
    from ssl_tasks.modalities.text.shards import TextDataset
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer

    if not tokenizer_path:
        raise UserError(f"{data_dir} is a text dataset: the job needs its tokenizer (the tokenizer@<dataset> stage)")
    tok = TextTokenizer.load(tokenizer_path)
    ds = TextDataset(Path(data_dir))
    seqs = tok.encode(list(ds.iter_texts(split)))  # texts only: the label files are never opened
    rows = make_rows(seqs, layout, max_len, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id)
    return rows, text_spec(tok, max_len)


def text_spec(tok: Any, max_len: int) -> TextDataSpec:
    """The data spec of a ``TextTokenizer`` for rows of ``max_len`` tokens."""
    return TextDataSpec(vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id,
                        mask_id=tok.mask_id, sentinel_ids=tuple(tok.sentinel_ids),
                        special_ids=tuple(sorted(tok.special_ids)), seq_len=max_len)


def caption_rows(captions: list[list[str]], tok: Any, max_len: int, *, with_words: bool = False) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-image caption lists -> (padded token rows (M, max_len), first row (N,), captions per image (N,), words).

    ``words`` (only ``with_words``, from the same tokenization; else None) is the (M, max_len) int16 word index of
    every token of the rows, -1 for specials and padding: what word dropout needs.
    """
    from ssl_tasks.modalities.text.batching import make_rows

    n_captions = np.array([len(c) for c in captions], dtype=np.int64)
    if len(n_captions) and n_captions.min() == 0:
        raise UserError(f"image {int(np.argmin(n_captions))} has no caption (validation should have refused it)")
    flat = [t for c in captions for t in c]
    ids, word_ids = tok.encode_words(flat) if with_words else (tok.encode(flat), None)
    rows = make_rows(ids, "pad", max_len, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id)
    first = np.concatenate([[0], np.cumsum(n_captions)[:-1]]).astype(np.int64)
    words = None
    if word_ids is not None:
        words = np.full(rows.shape, -1, dtype=np.int16)
        for r, w in enumerate(word_ids):  # laid out like pad_rows: [CLS] body[: max_len - 2] [SEP]
            body = w[: max_len - 2]
            words[r, 1 : 1 + len(body)] = body
    return rows, first, n_captions, words


def pair_feed(job: Any) -> PairFeed:
    """Train images and captions of a pair dataset, tokenized by the job's tokenizer."""
    from ssl_tasks.modalities.image_text.shards import PairDataset
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer
    if not job.tokenizer:
        raise UserError(f"{job.data_dir} is an image–text dataset: the job needs its caption tokenizer "
                        "(the tokenizer@<dataset> stage)")
    ds = PairDataset(Path(job.data_dir))
    cfg = job.objective_config
    max_len = int(cfg.text_encoder_kwargs.get("max_len", DEFAULT_MAX_LEN))
    tok = TextTokenizer.load(job.tokenizer)
    images = np.concatenate([np.asarray(a) for a in ds.shard_images("train")])  # label files are never opened
    rows, first, n_captions, words = caption_rows(ds.captions("train"), tok, max_len,
                                                  with_words=cfg.word_dropout > 0)
    c, h, w = ds.image_shape
    image = DataSpec(channels=c, image_size=min(h, w), mean=tuple(job.mean), std=tuple(job.std))
    return PairFeed(images, rows, first, n_captions, PairDataSpec(image=image, text=text_spec(tok, max_len)),
                    words=words, word_dropout=cfg.word_dropout)


def open_feed(job: Any) -> ImageFeed | TextFeed | PairFeed:
    """The feed of a ``TrainJob``: from the modality the objective trains in on the dataset's modality."""
    from ssl_tasks.core.modality import get_modality, modality_of, trains_in
    from ssl_tasks.objectives import OBJECTIVES

    data = modality_of(Path(job.data_dir))
    return get_modality(trains_in(OBJECTIVES.get(job.objective), data.name)).feed(job)
