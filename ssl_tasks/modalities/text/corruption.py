"""Text corruptions the language objectives train on, batched and seeded by the loop's generator.

- :func:`mlm_mask`: BERT's masking (Devlin et al. 2019, arXiv:1810.04805, Sec. 3.1): ``p`` of the
  non-special tokens are selected; of those 80% become ``[MASK]``, 10% a random non-special token and 10%
  stay. Drawn afresh on every call, i.e. every time a sequence is seen (RoBERTa's dynamic masking, Liu et
  al. 2019, arXiv:1907.11692).
- :func:`span_corrupt`: T5's span corruption (Raffel et al. 2020, arXiv:1910.10683, Sec. 3.1.4): a
  ``noise_density`` share of the tokens, in spans of mean length ``mean_span_length``, is cut out; each
  span is replaced by one sentinel in the input and the target lists ``sentinel_i span_i`` in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssl_tasks.core.errors import UserError

IGNORE = -100  # label of unselected positions (cross entropy's ignore_index)


def mlm_mask(ids: torch.Tensor, g: torch.Generator, *, special_ids: Sequence[int], vocab_size: int, mask_id: int,
             p: float = 0.15, p_mask: float = 0.8, p_random: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids -> (inputs, labels): labels hold the original id at selected positions, ``IGNORE`` elsewhere."""
    if not (0 < p < 1 and 0 <= p_mask and 0 <= p_random and p_mask + p_random <= 1):
        raise ValueError(f"need 0 < p < 1 and p_mask + p_random <= 1, got p={p}, p_mask={p_mask}, p_random={p_random}")
    special = torch.zeros(vocab_size, dtype=torch.bool, device=ids.device)
    special[torch.as_tensor(list(special_ids), device=ids.device, dtype=torch.long)] = True
    candidate = ~special[ids]  # (B, L) never select [PAD], [CLS], [SEP], [MASK] or sentinels
    u = torch.rand(ids.shape, generator=g, device=ids.device)
    selected = candidate & (u < p)
    action = torch.rand(ids.shape, generator=g, device=ids.device)  # < p_mask: [MASK]; next p_random: random
    normal = (~special).nonzero().squeeze(1)  # (V',) ids a random replacement may take
    pick = torch.randint(0, len(normal), ids.shape, generator=g, device=ids.device)
    inputs = ids.clone()
    inputs[selected & (action < p_mask)] = mask_id
    rnd = selected & (action >= p_mask) & (action < p_mask + p_random)
    inputs[rnd] = normal[pick[rnd]]
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def _random_segmentation(n_items: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (n_segments,) >= 1 summing to n_items, uniformly over such compositions (as T5)."""
    cuts = np.sort(rng.choice(np.arange(1, n_items), size=n_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n_items]]))


def noise_mask(length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator) -> np.ndarray:
    """(length,) bool: alternating non-noise / noise spans, starting with non-noise (T5's random_spans_noise_mask)."""
    n_noise = int(min(max(round(length * noise_density), 1), length - 1))
    n_spans = int(min(max(round(n_noise / mean_span_length), 1), n_noise, length - n_noise))
    noise = _random_segmentation(n_noise, n_spans, rng)
    keep = _random_segmentation(length - n_noise, n_spans, rng)
    mask = np.zeros(length, dtype=bool)
    pos = 0
    for k, z in zip(keep, noise):
        pos += k
        mask[pos : pos + z] = True
        pos += z
    return mask


def span_corrupt_one(tokens: np.ndarray, mask: np.ndarray, sentinel_ids: Sequence[int], eos_id: int
                     ) -> tuple[list[int], list[int]]:
    """One sequence and its noise mask -> (inputs, targets), both ending with ``eos_id``."""
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))  # first token of each noise span
    if len(starts) > len(sentinel_ids):
        raise UserError(f"span corruption needs {len(starts)} sentinels but the tokenizer has {len(sentinel_ids)}")
    span_of = np.cumsum(np.isin(np.arange(len(tokens)), starts)) - 1  # noise span index per position
    inputs, targets = [], []
    for i, t in enumerate(tokens.tolist()):
        if not mask[i]:
            inputs.append(t)
            continue
        if i in starts:
            inputs.append(sentinel_ids[span_of[i]])
            targets.append(sentinel_ids[span_of[i]])
        targets.append(t)
    return inputs + [eos_id], targets + [eos_id]


def span_corrupt(ids: torch.Tensor, g: torch.Generator, *, pad_id: int, eos_id: int, bos_id: int,
                 sentinel_ids: Sequence[int], noise_density: float = 0.15, mean_span_length: float = 3.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L) ids (pad = ``pad_id``) -> encoder inputs (B, Li), decoder inputs (B, Lt), targets (B, Lt).

    Decoder inputs are the targets shifted right behind ``bos_id`` (teacher forcing); all three are padded
    with ``pad_id``. The draws come from ``g`` (one seed per batch), so a seeded run repeats exactly.
    Neither side is longer than ``ids`` (L): where a full row's corruption would be L + 1 tokens (spans of
    about one token, where each sentinel stands for one token and the closing ``eos_id`` adds one), the row's
    last token is dropped and the row corrupted again, as T5 sizes its inputs so that both sides fit.
    """
    if not 0 < noise_density < 1 or mean_span_length < 1:
        raise ValueError(f"need 0 < noise_density < 1 and mean_span_length >= 1, got {noise_density}, "
                         f"{mean_span_length}")
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    rng = np.random.default_rng(seed)
    rows = ids.cpu().numpy()
    enc, tgt = [], []
    for row in rows:
        toks = row[row != pad_id]
        if len(toks) < 2:
            raise UserError("span corruption needs sequences of at least 2 tokens")
        inp, out = span_corrupt_one(toks, noise_mask(len(toks), noise_density, mean_span_length, rng), sentinel_ids,
                                    eos_id)
        if max(len(inp), len(out)) > ids.shape[1]:  # both sides are <= len(toks) + 1: one token fewer fits
            if len(toks) < 3:
                raise UserError(f"span corruption of a {len(toks)}-token row does not fit in {ids.shape[1]} tokens")
            toks = toks[:-1]
            inp, out = span_corrupt_one(toks, noise_mask(len(toks), noise_density, mean_span_length, rng),
                                        sentinel_ids, eos_id)
        enc.append(inp)
        tgt.append(out)

    def padded(seqs: list[list[int]]) -> torch.Tensor:
        out = np.full((len(seqs), max(map(len, seqs))), pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
        return torch.from_numpy(out).to(ids.device)

    targets = padded(tgt)
    dec_in = torch.cat([torch.full_like(targets[:, :1], bos_id), targets[:, :-1]], dim=1)
    dec_in[targets == pad_id] = pad_id
    return padded(enc), dec_in, targets


def reconstruct(inputs: Sequence[int], targets: Sequence[int], sentinel_ids: Sequence[int], eos_id: int,
                pad_id: int = 0) -> list[int]:
    """Invert :func:`span_corrupt_one`: put each target span back where its sentinel stands.

    Trailing ``pad_id`` and the final ``eos_id`` of both sequences are dropped; an ``eos_id`` inside the text
    (packed rows separate documents with ``[SEP]``) is ordinary content.
    """

    def body(seq: Sequence[int]) -> list[int]:
        out = list(seq)
        while out and out[-1] == pad_id:
            out.pop()
        if not out or out[-1] != eos_id:
            raise ValueError("sequence does not end with eos_id")
        return out[:-1]

    sentinels = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current = None
    for t in body(targets):
        if t in sentinels:
            current = t
            spans[t] = []
        elif current is not None:
            spans[current].append(t)
    out: list[int] = []
    for t in body(inputs):
        out.extend(spans[t] if t in spans else [t])
    return out
