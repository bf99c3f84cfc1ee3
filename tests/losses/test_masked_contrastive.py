"""wav2vec 2.0's contrastive loss against a loop over utterances and masked frames, and its distractor sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_tasks.losses.masked_contrastive import MaskedContrastiveLoss, sample_distractors


def _mask(g: torch.Generator) -> torch.Tensor:
    m = torch.rand(4, 12, generator=g) < 0.5
    m[0] = False
    m[0, 3] = True  # an utterance with a single masked frame: no distractor
    m[1, :2] = True
    return m


def test_distractors_are_other_masked_frames_of_the_same_utterance() -> None:
    g = torch.Generator().manual_seed(0)
    mask = _mask(g)
    d, valid = sample_distractors(mask, 30, g)
    pos = torch.nonzero(mask)  # (N, 2): (row, frame), row-major as x[mask]
    assert d.shape == (len(pos), 30) and valid.shape == (len(pos),)
    for i, (row, frame) in enumerate(pos.tolist()):
        if not valid[i]:
            assert mask[row].sum() == 1
            continue
        for j in d[i].tolist():
            assert j != i  # never the positive itself
            assert pos[j, 0] == row and mask[row, pos[j, 1]]  # a masked frame of the same utterance
    # uniform over the others: with 30 draws per frame from 5-7 candidates, every candidate appears for most frames
    row1 = [i for i, (r, _) in enumerate(pos.tolist()) if r == 1]
    seen = set(d[row1[0]].tolist())
    assert seen == set(row1) - {row1[0]}


def _reference(c: torch.Tensor, q: torch.Tensor, d: torch.Tensor, valid: torch.Tensor, temp: float
               ) -> tuple[float, float]:
    losses, hits = [], []
    for i in range(c.shape[0]):
        if not valid[i]:
            continue
        logits = [F.cosine_similarity(c[i], q[i], dim=0).item() / temp]
        for j in d[i].tolist():
            same = bool(torch.equal(q[j], q[i]))
            logits.append(-math.inf if same else F.cosine_similarity(c[i], q[j], dim=0).item() / temp)
        mx = max(logits)
        lse = mx + math.log(sum(math.exp(v - mx) for v in logits))
        losses.append(lse - logits[0])
        hits.append(float(logits[0] > max(logits[1:])))
    return sum(losses) / len(losses), sum(hits) / len(hits)


@pytest.mark.parametrize("temp", [0.1, 1.0])
def test_loss_matches_a_loop_over_masked_frames(temp: float) -> None:
    g = torch.Generator().manual_seed(1)
    mask = _mask(g)
    n = int(mask.sum())
    c, q = torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
    q[5] = q[6]  # a distractor equal to the positive is left out of the softmax
    d, valid = sample_distractors(mask, 7, g)
    loss, acc = MaskedContrastiveLoss(temp)(c, q, d, valid)
    ref_loss, ref_acc = _reference(c, q, d, valid, temp)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert acc.item() == pytest.approx(ref_acc)


def test_perfect_prediction_has_low_loss_and_full_accuracy() -> None:
    g = torch.Generator().manual_seed(2)
    mask = torch.ones(2, 10, dtype=torch.bool)
    q = torch.eye(20)[:, :20]  # orthogonal latents
    d, valid = sample_distractors(mask, 10, g)
    loss, acc = MaskedContrastiveLoss(0.1)(q.clone(), q, d, valid)
    assert acc.item() == 1.0  # closed form: positive logit 1/0.1, the 10 distractors at 0
    assert loss.item() == pytest.approx(math.log(1 + 10 * math.exp(-10)), rel=1e-3)  # float32


def test_gradients_reach_context_and_latents_and_no_distractor_case_is_zero() -> None:
    g = torch.Generator().manual_seed(3)
    mask = _mask(g)
    n = int(mask.sum())
    c, q = torch.randn(n, 8, requires_grad=True), torch.randn(n, 8, requires_grad=True)
    loss, _ = MaskedContrastiveLoss()(c, q, *sample_distractors(mask, 5, g))
    loss.backward()
    assert c.grad.abs().sum() > 0 and q.grad.abs().sum() > 0
    lone = torch.zeros(1, 6, dtype=torch.bool)
    lone[0, 2] = True
    loss, acc = MaskedContrastiveLoss()(torch.randn(1, 8), torch.randn(1, 8), *sample_distractors(lone, 5, g))
    assert loss.item() == 0.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        MaskedContrastiveLoss(0.0)
    with pytest.raises(ValueError, match="distractors"):
        sample_distractors(torch.ones(1, 4, dtype=torch.bool), 0, torch.Generator())
