"""Span masking over frames, defined for short clips (wav2vec 2.0 Sec. 3.1; HuBERT Sec. III-B).

The paper's rule: every frame starts a span of ``M`` masked frames with probability ``p`` (p = 0.065, M = 10:
about 49% of a long utterance's frames masked, spans overlapping). The reference code's ``mask_prob`` 0.65 is
p x M, turned into a span count per utterance with a floor of ``min_masks`` spans; on FSDD's 6-113 frame
clips that silently masks 50-100% of frames, since short clips get spans as long as themselves.

Here, per utterance with ``n`` valid frames:

* the span length is ``m = max(1, min(M, n // 2))``: a span never covers more than half a clip;
* each of the ``n - m + 1`` positions where a span fits starts one with probability ``p`` (spans may overlap);
* at least one span is masked (one start drawn uniformly when none was), so every clip has a target;
* where ``n >= 2`` at least one frame stays unmasked (a random masked frame is unmasked when spans covered all).

``mask_stats`` measures the masked fraction per clip length; ``tests/modalities/test_speech_masking.py`` checks it
on short (3-25 frames) and long (50-113) clips. Measured (400 draws per length; mean masked fraction):

=================  ====  ====  ====  ====  ====  ====  ====
p, M               n=3   n=6   n=10  n=25  n=49  n=80  n=113
=================  ====  ====  ====  ====  ====  ====  ====
0.065, 10 (paper)  0.34  0.50  0.52  0.47  0.43  0.45  0.46
0.13, 5 (default)  0.35  0.52  0.55  0.43  0.47  0.48  0.49
=================  ====  ====  ====  ====  ====  ====  ====

The half-clip cap is what keeps short clips near the long-clip fraction: with ``m = min(M, n - 1)`` and one
forced span, the paper's settings masked 0.67 / 0.83 / 0.90 of 3 / 6 / 10-frame clips. Padding every clip to
1 s at 16 kHz and counting the padding as audio (``pad_is_audio``) gives every row 49 frames: 0.43 (paper's
settings) / 0.47 (default), but a third to most of each row is then silence the model is asked to predict.
"""

from __future__ import annotations

import torch


def span_mask(frame_counts: torch.Tensor, num_frames: int, p: float, span: int, g: torch.Generator) -> torch.Tensor:
    """(B,) valid frames per row -> (B, F) bool, True = masked; frames beyond a row's count are never masked.

    Randomness comes from ``g`` only (CPU generator), so a seeded run repeats.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"mask probability must be in [0, 1], got {p}")
    if span < 1:
        raise ValueError(f"mask span length must be >= 1, got {span}")
    counts = frame_counts.detach().cpu().long().clamp(0, num_frames)
    b = counts.shape[0]
    mask = torch.zeros(b, num_frames, dtype=torch.bool)
    draws = torch.rand(b, num_frames, generator=g)  # one uniform per (row, start position)
    pick = torch.rand(b, 2, generator=g)  # fallbacks: a start when none was drawn, a frame to unmask
    for i in range(b):
        n = int(counts[i])
        if n == 0:
            continue
        m = max(1, min(span, n // 2))
        starts = torch.nonzero(draws[i, : n - m + 1] < p).flatten()  # (S,)
        if starts.numel() == 0:
            starts = torch.tensor([min(int(pick[i, 0] * (n - m + 1)), n - m)])
        for s in starts.tolist():
            mask[i, s: s + m] = True
        if n >= 2 and bool(mask[i, :n].all()):
            mask[i, min(int(pick[i, 1] * n), n - 1)] = False
    return mask.to(frame_counts.device)


def mask_stats(frame_counts: list[int], p: float, span: int, repeats: int = 200, seed: int = 0
               ) -> dict[int, dict[str, float]]:
    """Masked fraction per clip length: {n: {"mean", "min", "max", "full"}} over ``repeats`` draws, where "full" is
    the share of draws that masked every frame."""
    g = torch.Generator().manual_seed(seed)
    out: dict[int, dict[str, float]] = {}
    for n in frame_counts:
        m = span_mask(torch.full((repeats,), n), n, p, span, g)  # (R, n)
        frac = m.float().mean(1)
        out[n] = {"mean": float(frac.mean()), "min": float(frac.min()), "max": float(frac.max()),
                  "full": float((frac == 1).float().mean())}
    return out
