"""BYOL's and SimSiam's regression loss (Grill et al. 2020, arXiv:2006.07733): 2 - 2 cos(p, z)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeCosineLoss(nn.Module):
    """Mean over the batch of ``2 - 2 * cos(p, z)``; ``z`` is a constant target unless ``stop_gradient=False``.

    SimSiam writes the same loss as ``-cos(p, z)``: an affine change that moves neither the optimum nor,
    up to a factor 2, the gradient.
    """

    def __init__(self, stop_gradient: bool = True) -> None:
        super().__init__()
        self.stop_gradient = stop_gradient

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """p, z: (B, D) -> scalar in [0, 4]; 0 when p and z point the same way."""
        target = z.detach() if self.stop_gradient else z
        return (2 - 2 * F.cosine_similarity(p, target, dim=1)).mean()
