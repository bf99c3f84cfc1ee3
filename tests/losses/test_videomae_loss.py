"""VideoMAE's loss: MSE on masked tubelets with per-tubelet normalised raw-pixel targets, and its foreground term."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.modalities.video.masking import tube_masking, tubelet_patchify
from ssl_tasks.objectives.videomae import TubeletReconstructionLoss


def inputs(seed: int = 0, b: int = 3, n: int = 8, p: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions, raw [0, 1] target tubelets (some all background), a mask with masked and visible tubelets."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(b, n, p, generator=g)
    target = torch.rand(b, n, p, generator=g) * (torch.rand(b, n, p, generator=g) < 0.4)  # mostly black pixels
    target[:, ::3] = 0.0  # whole background tubelets
    mask = torch.rand(b, n, generator=g) < 0.6
    mask[0, 0], mask[0, 1], mask[1, 4] = True, False, True  # tubelet (0, 0) is background; (1, 4) has pixels
    return pred, target, mask


def reference(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool,
              eps: float = 1e-6) -> tuple[float, float]:
    """Slow and obvious: loop over clips and tubelets; (loss over the masked, loss over the masked foreground)."""
    total, count, fg_total, fg_count = 0.0, 0, 0.0, 0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if not mask[i, j]:
                continue
            t = [float(v) for v in target[i, j]]
            foreground = max(t) > 0
            if norm_pix:
                mu = sum(t) / len(t)
                var = sum((v - mu) ** 2 for v in t) / (len(t) - 1)
                t = [(v - mu) / (var + eps) ** 0.5 for v in t]
            err = sum((float(a) - b) ** 2 for a, b in zip(pred[i, j], t)) / len(t)
            total, count = total + err, count + 1
            if foreground:
                fg_total, fg_count = fg_total + err, fg_count + 1
    return total / count, (fg_total / fg_count if fg_count else 0.0)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_matches_the_loop_reference(norm_pix: bool) -> None:
    for seed in range(3):
        pred, target, mask = inputs(seed)
        out = TubeletReconstructionLoss(norm_pix=norm_pix)(pred, target, mask)
        loss, fg = reference(pred, target, mask, norm_pix)
        assert out.loss.item() == pytest.approx(loss, rel=1e-5)
        assert out.foreground_loss.item() == pytest.approx(fg, rel=1e-5)
        assert out.foreground.sum() < mask.sum()  # some masked tubelets were background


def test_zero_for_a_perfect_prediction() -> None:
    _, target, mask = inputs(1)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    normalised = (target - mean) / (var + 1e-6).sqrt()
    out = TubeletReconstructionLoss(norm_pix=True)(normalised, target, mask)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-10) and out.foreground_loss.item() == pytest.approx(0.0)
    assert TubeletReconstructionLoss(norm_pix=False)(target, target, mask).loss.item() == 0.0


def test_only_masked_tubelets_count() -> None:
    pred, target, mask = inputs(2)
    loss = TubeletReconstructionLoss()
    base = loss(pred, target, mask)
    p2, t2 = pred.clone(), target.clone()
    p2[~mask] = torch.randn_like(p2[~mask]) * 10
    t2[~mask] = torch.rand_like(t2[~mask])
    for p, t in ((p2, target), (pred, t2)):
        out = loss(p, t, mask)
        assert out.loss.item() == pytest.approx(base.loss.item(), rel=1e-6)
        assert out.foreground_loss.item() == pytest.approx(base.foreground_loss.item(), rel=1e-6)
    assert base.foreground[1, 4] and not base.foreground[0, 0]
    p3 = pred.clone()
    p3[1, 4] += 1.0  # a masked foreground tubelet
    out = loss(p3, target, mask)
    assert out.loss.item() != pytest.approx(base.loss.item(), rel=1e-4)
    assert out.foreground_loss.item() != pytest.approx(base.foreground_loss.item(), rel=1e-4)
    p3 = pred.clone()
    p3[0, 0] += 1.0  # a masked background tubelet: only the full loss sees it
    out = loss(p3, target, mask)
    assert out.loss.item() != pytest.approx(base.loss.item(), rel=1e-4)
    assert out.foreground_loss.item() == pytest.approx(base.foreground_loss.item(), rel=1e-6)


def test_per_tubelet_normalisation_is_invariant_to_each_tubelet_affine_change() -> None:
    """With norm_pix the target of each tubelet is its own z-score: scaling and shifting tubelets one by one (their
    variances far above eps) changes nothing."""
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 6, 16, generator=g), torch.rand(2, 6, 16, generator=g)
    mask = torch.tensor([[True, False, True, True, False, True], [False, True, True, False, True, True]])
    scale = 0.2 + torch.rand(2, 6, 1, generator=g)
    shift = torch.rand(2, 6, 1, generator=g) * 0.5
    loss = TubeletReconstructionLoss(norm_pix=True)
    assert loss(pred, target * scale + shift, mask).loss.item() == pytest.approx(loss(pred, target, mask).loss.item(),
                                                                                  rel=1e-4)
    assert loss(pred, target * scale, mask).loss.item() != pytest.approx(
        TubeletReconstructionLoss(norm_pix=False)(pred, target * scale, mask).loss.item(), rel=1e-3)


def test_foreground_loss_is_zero_not_nan_without_masked_foreground() -> None:
    pred, target, mask = inputs(0)
    target = target.clone()
    target[mask] = 0.0  # every masked tubelet is background; visible ones still have pixels
    out = TubeletReconstructionLoss()(pred, target, mask)
    assert not out.foreground.any() and out.foreground_loss.item() == 0.0 and math.isfinite(out.loss.item())


def test_any_channel_count_and_a_grad_only_through_the_prediction() -> None:
    """Targets from (B, T, C, H, W) clips of 1 or 3 channels, through the tubelet patchify and tube masking."""
    g = torch.Generator().manual_seed(4)
    for c in (1, 3):
        clips = torch.randint(0, 256, (2, 4, c, 8, 8), generator=g).float() / 255
        target = tubelet_patchify(clips, 2, 4).requires_grad_()  # (2, 8, 32 * C)
        _, mask = tube_masking(2, 2, 2, 2, 0.5, g)
        pred = torch.randn(2, 8, 32 * c, generator=g, requires_grad=True)
        out = TubeletReconstructionLoss()(pred, target, mask)
        assert out.loss.item() == pytest.approx(reference(pred.detach(), target.detach(), mask, True)[0], rel=1e-5)
        out.loss.backward()
        assert pred.grad is not None and target.grad is None
        assert pred.grad[~mask].abs().sum() == 0 and pred.grad[mask].abs().sum() > 0


def test_an_empty_mask_is_refused() -> None:
    pred, target, mask = inputs(0)
    with pytest.raises(ValueError, match="no tubelet"):
        TubeletReconstructionLoss()(pred, target, torch.zeros_like(mask))
