"""The text modality's training feed: the training split's texts tokenized once by the dataset's tokenizer (the
``tokenizer@<dataset>`` stage) into int64 rows of ``max_len`` tokens, padded or packed as the objective's ``layout``
asks. Token rows live in memory (16 MiB for 65,000 rows of 64 tokens); the texts are read shard by shard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.objectives.base import TextDataSpec
from ssl_tasks.training.feeds import stream_rows, trim_padding

DEFAULT_MAX_LEN = 64


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


def text_feed(job: Any) -> TextFeed:
    """The token rows of a ``TrainJob``'s text dataset, laid out as its objective config asks."""
    max_len = int(job.encoder_kwargs.get("max_len", DEFAULT_MAX_LEN))
    layout = text_layout(job.objective_config)
    rows, spec = text_rows(Path(job.data_dir), job.tokenizer, split="train", layout=layout, max_len=max_len)
    return TextFeed(rows, spec, layout)
