"""MAE's loss: MSE on masked patches only, optional per-patch normalised targets."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.losses.masked_reconstruction import MaskedReconstructionLoss


def inputs(seed: int = 0, b: int = 3, n: int = 6, p: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(b, n, p, generator=g), torch.randn(b, n, p, generator=g)
    mask = torch.rand(b, n, generator=g) < 0.6
    mask[0, 0], mask[0, 1] = True, False  # at least one masked and one visible patch
    return pred, target, mask


def reference(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool, eps: float = 1e-6) -> float:
    """Slow and obvious: loop over patches, keep the masked ones."""
    total, count = 0.0, 0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if not mask[i, j]:
                continue
            t = [float(v) for v in target[i, j]]
            if norm_pix:
                mu = sum(t) / len(t)
                var = sum((v - mu) ** 2 for v in t) / (len(t) - 1)
                t = [(v - mu) / (var + eps) ** 0.5 for v in t]
            total += sum((float(a) - b) ** 2 for a, b in zip(pred[i, j], t)) / len(t)
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [False, True])
def test_matches_the_loop_reference(norm_pix: bool) -> None:
    for seed in range(3):
        pred, target, mask = inputs(seed)
        out = MaskedReconstructionLoss(norm_pix=norm_pix)(pred, target, mask)
        assert out.item() == pytest.approx(reference(pred, target, mask, norm_pix), rel=1e-5)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_visible_patches_are_ignored_masked_ones_are_not(norm_pix: bool) -> None:
    pred, target, mask = inputs(1)
    loss = MaskedReconstructionLoss(norm_pix=norm_pix)
    base = loss(pred, target, mask)
    vis = ~mask
    p2, t2 = pred.clone(), target.clone()
    p2[vis] = torch.randn_like(p2[vis]) * 10
    t2[vis] = torch.randn_like(t2[vis]) * 10
    assert loss(p2, target, mask).item() == pytest.approx(base.item(), rel=1e-6)  # visible predictions
    assert loss(pred, t2, mask).item() == pytest.approx(base.item(), rel=1e-6)  # visible pixels
    p3, t3 = pred.clone(), target.clone()
    p3[0, 0] += 1.0
    t3[0, 0, 0] += 1.0
    assert loss(p3, target, mask).item() != pytest.approx(base.item(), rel=1e-4)
    assert loss(pred, t3, mask).item() != pytest.approx(base.item(), rel=1e-4)


def test_gradient_reaches_masked_predictions_only_and_never_the_target() -> None:
    pred, target, mask = inputs(2)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    MaskedReconstructionLoss()(pred, target, mask).backward()
    assert target.grad is None
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask].abs().sum(-1) > 0).all()


def test_norm_pix_targets_are_per_patch_standardised() -> None:
    """With norm_pix, a patch and any affine brightening of it are the same target; zero when pred is it."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 5, 16, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    loss = MaskedReconstructionLoss(norm_pix=True)
    pred = torch.randn(2, 5, 16, generator=g)
    shifted = 3.0 * target + 7.0
    assert loss(pred, shifted, mask).item() == pytest.approx(loss(pred, target, mask).item(), rel=1e-4)
    standard = (target - target.mean(-1, keepdim=True)) / target.std(-1, keepdim=True)
    assert loss(standard, target, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert MaskedReconstructionLoss(norm_pix=False)(target, target, mask).item() == 0.0
    # a flat patch (zero variance) gives a finite zero target, not NaN
    flat = torch.full((1, 1, 4), 0.5)
    assert loss(torch.zeros(1, 1, 4), flat, torch.ones(1, 1, dtype=torch.bool)).item() == pytest.approx(0.0)


def test_empty_mask_is_refused() -> None:
    pred, target, _ = inputs()
    with pytest.raises(ValueError, match="no patch"):
        MaskedReconstructionLoss()(pred, target, torch.zeros(3, 6, dtype=torch.bool))
