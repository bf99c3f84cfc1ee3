"""The image–text modality's training feed: the training images in memory and every caption tokenized once into
padded rows; each epoch draws one of an image's captions per step (``PairFeed``), its words dropped afresh when the
objective asks (``drop_words``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.text.feed import DEFAULT_MAX_LEN, text_spec
from ssl_tasks.objectives.base import DataSpec, PairDataSpec
from ssl_tasks.training.feeds import stream_rows, trim_padding


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
