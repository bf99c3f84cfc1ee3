"""HuBERT's masked prediction loss against a loop over utterances and frames."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.losses.masked_prediction import IGNORE, MaskedPredictionLoss


def _reference(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    losses, hits = [], []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if not mask[b, t] or targets[b, t] == IGNORE:
                continue
            row = logits[b, t].tolist()
            mx = max(row)
            lse = mx + math.log(sum(math.exp(v - mx) for v in row))
            losses.append(lse - row[int(targets[b, t])])
            hits.append(float(max(range(len(row)), key=row.__getitem__) == int(targets[b, t])))
    return sum(losses) / len(losses), sum(hits) / len(hits)


def test_matches_a_loop_and_ignores_unmasked_and_padded_frames() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 5, generator=g)
    targets = torch.randint(0, 5, (3, 9), generator=g)
    targets[2, 6:] = IGNORE  # padding
    mask = torch.rand(3, 9, generator=g) < 0.5
    mask[2, 7] = True  # a masked padded frame: still nothing
    loss, acc = MaskedPredictionLoss()(logits, targets, mask)
    ref_loss, ref_acc = _reference(logits, targets, mask)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5) and acc.item() == pytest.approx(ref_acc)
    # changing unmasked or padded frames' logits and targets changes nothing
    logits2, targets2 = logits.clone(), targets.clone()
    logits2[~mask] = 100 * torch.randn(int((~mask).sum()), 5)
    targets2[~mask] = 0
    logits2[2, 6:] = -50.0
    assert MaskedPredictionLoss()(logits2, targets2, mask)[0].item() == pytest.approx(loss.item(), rel=1e-6)


def test_no_masked_target_is_refused() -> None:
    logits, targets = torch.randn(1, 4, 3), torch.full((1, 4), IGNORE)
    with pytest.raises(ValueError, match="no frame with a target"):
        MaskedPredictionLoss()(logits, targets, torch.ones(1, 4, dtype=torch.bool))
