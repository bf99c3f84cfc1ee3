"""MAE's reconstruction loss (He et al. "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
arXiv:2111.06377): mean squared error in pixel space, over masked patches only."""

from __future__ import annotations

import torch
from torch import nn


class MaskedReconstructionLoss(nn.Module):
    """Per-patch MSE averaged over the masked patches; visible patches contribute nothing.

    ``norm_pix`` normalises each target patch by its own mean and (unbiased) variance,
    ``(t - mean) / sqrt(var + eps)``, the variant the paper finds gives better representations.
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix, self.eps = norm_pix, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, N, P) patches (P = p*p*C); mask: (B, N) bool, True = masked -> scalar."""
        if not bool(mask.any()):
            raise ValueError("mask selects no patch: the loss is undefined")
        target = target.detach()
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
            var = target.var(dim=-1, keepdim=True)  # (B, N, 1)
            target = (target - mean) / (var + self.eps).sqrt()
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
        m = mask.to(per_patch.dtype)
        return (per_patch * m).sum() / m.sum()
