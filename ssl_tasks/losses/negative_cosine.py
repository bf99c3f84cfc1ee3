"""BYOL's regression loss (Grill et al. 2020, arXiv:2006.07733): 2 - 2 cos(p, z)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeCosineLoss(nn.Module):
    """Mean over the batch of ``2 - 2 * cos(p, z)``; ``z`` is treated as a constant target."""

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """p, z: (B, D) -> scalar in [0, 4]; 0 when p and z point the same way."""
        return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()
