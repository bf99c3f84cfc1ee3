"""Token id lists -> fixed-shape int64 arrays the training loop streams, in one of two layouts.

- ``pad``: one text per row, ``[CLS] tokens [SEP]`` truncated to ``seq_len`` and right-padded with
  ``[PAD]``: sentence-level objectives (SimCSE) and every evaluation embedding;
- ``pack``: the texts concatenated, each followed by ``[SEP]``, and cut into full rows of ``seq_len``
  tokens (GPT / RoBERTa "full sentences" packing): no padding, nothing wasted on short texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ssl_tasks.core.errors import UserError

Layout = Literal["pad", "pack"]


def pad_rows(seqs: Sequence[Sequence[int]], seq_len: int, *, cls_id: int, sep_id: int, pad_id: int) -> np.ndarray:
    """(N, seq_len) int64: ``[CLS] ids[: seq_len - 2] [SEP] [PAD]...`` per text."""
    if seq_len < 3:
        raise UserError(f"seq_len must be >= 3 to hold [CLS] x [SEP], got {seq_len}")
    out = np.full((len(seqs), seq_len), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        body = list(s[: seq_len - 2])
        out[i, : len(body) + 2] = [cls_id, *body, sep_id]
    return out


def pack_rows(seqs: Sequence[Sequence[int]], seq_len: int, *, sep_id: int) -> np.ndarray:
    """(M, seq_len) int64 rows of the ``[SEP]``-joined stream; the incomplete last row is dropped."""
    if seq_len < 2:
        raise UserError(f"seq_len must be >= 2, got {seq_len}")
    lengths = np.fromiter((len(s) + 1 for s in seqs), dtype=np.int64, count=len(seqs))
    stream = np.full(int(lengths.sum()), sep_id, dtype=np.int64)
    ends = np.cumsum(lengths)
    for s, end in zip(seqs, ends):
        stream[end - 1 - len(s) : end - 1] = s
    m = len(stream) // seq_len
    return stream[: m * seq_len].reshape(m, seq_len)


def make_rows(seqs: Sequence[Sequence[int]], layout: Layout, seq_len: int, *, cls_id: int, sep_id: int,
              pad_id: int) -> np.ndarray:
    if layout == "pad":
        return pad_rows(seqs, seq_len, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id)
    if layout == "pack":
        return pack_rows(seqs, seq_len, sep_id=sep_id)
    raise UserError(f"unknown text layout {layout!r}; valid: pad, pack")
