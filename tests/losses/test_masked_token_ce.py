"""BEiT's loss: token cross-entropy over masked positions only."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.losses.masked_token_ce import MaskedTokenCrossEntropy


def test_matches_reference_over_masked_positions() -> None:
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    mask = torch.rand(3, 5, generator=g) < 0.5
    ref = [-(logits[b, n, targets[b, n]] - math.log(float(logits[b, n].exp().sum())))
           for b in range(3) for n in range(5) if mask[b, n]]
    out = MaskedTokenCrossEntropy()(logits, targets, mask).item()
    assert out == pytest.approx(float(sum(ref) / len(ref)), rel=1e-5)


def test_unmasked_positions_do_not_matter_and_empty_mask_raises() -> None:
    logits, targets = torch.randn(2, 4, 3), torch.randint(0, 3, (2, 4))
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    loss = MaskedTokenCrossEntropy()
    changed = logits + 100 * torch.randn(2, 4, 3) * (~mask).unsqueeze(-1)
    assert torch.equal(loss(logits, targets, mask), loss(changed, targets, mask))
    with pytest.raises(ValueError, match="no position"):
        loss(logits, targets, torch.zeros(2, 4, dtype=torch.bool))
