"""GraphMAE's scaled cosine error (Hou et al., KDD 2022, arXiv:2205.10803, eq. 2).

``SCE = mean over masked nodes of (1 - cos(x_i, z_i))^alpha`` with ``alpha >= 1`` (3 on Cora): the power
down-weights nodes already reconstructed well, so training focuses on the hard ones.
"""

from __future__ import annotations

import torch
from torch import nn


class ScaledCosineError(nn.Module):
    def __init__(self, alpha: float = 3.0) -> None:
        super().__init__()
        if alpha < 1:
            raise ValueError(f"scaled cosine error needs alpha >= 1, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """recon, target (M, F) -> scalar."""
        cos = (nn.functional.normalize(recon, dim=-1) * nn.functional.normalize(target, dim=-1)).sum(-1)
        return (1 - cos).pow(self.alpha).mean()
