"""Span masking defined for short clips: masked-fraction statistics on short (3-25 frames) and long (50-113)
clips, at least one masked and one unmasked frame, nothing masked beyond a clip, seeded."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.modalities.speech.masking import mask_stats, span_mask

SHORT, LONG = [3, 4, 6, 10, 15, 25], [50, 80, 113]


@pytest.mark.parametrize(("p", "span"), [(0.13, 5), (0.065, 10)])  # the default; the paper's
def test_masked_fraction_is_near_half_on_short_and_long_clips(p: float, span: int) -> None:
    stats = mask_stats(SHORT + LONG, p, span, repeats=300)
    for n, s in stats.items():
        assert s["full"] == 0.0, (n, s)  # never the whole clip
        assert 0.3 <= s["mean"] <= 0.6, (n, s)  # the paper's ~49% on long utterances, and no 80-100% on short ones
    long_mean = sum(stats[n]["mean"] for n in LONG) / len(LONG)
    assert 0.4 <= long_mean <= 0.55


def test_every_clip_has_a_masked_and_an_unmasked_frame_and_padding_is_never_masked() -> None:
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([1, 2, 3, 5, 8, 13, 40, 0])
    for _ in range(50):
        m = span_mask(counts, 40, 0.9, 10, g)  # a high start rate: spans cover everything unless prevented
        for i, n in enumerate(counts.tolist()):
            assert not m[i, n:].any()
            if n >= 1:
                assert m[i, :n].any()
            if n >= 2:
                assert not m[i, :n].all()


def test_spans_are_contiguous_runs_of_the_span_length() -> None:
    g = torch.Generator().manual_seed(1)
    m = span_mask(torch.full((200,), 60), 60, 0.01, 5, g)  # sparse: mostly isolated spans
    runs = []
    for row in m.tolist():
        run = 0
        for v in row + [False]:
            if v:
                run += 1
            elif run:
                runs.append(run)
                run = 0
    assert min(runs) >= 4  # one frame may be unmasked from a run only when spans cover the whole clip
    assert sum(r == 5 for r in runs) / len(runs) > 0.8


def test_seeded_and_validated() -> None:
    counts = torch.tensor([7, 30, 49])
    a = span_mask(counts, 49, 0.13, 5, torch.Generator().manual_seed(3))
    b = span_mask(counts, 49, 0.13, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="probability"):
        span_mask(counts, 49, 1.5, 5, torch.Generator())
    with pytest.raises(ValueError, match="span length"):
        span_mask(counts, 49, 0.1, 0, torch.Generator())
