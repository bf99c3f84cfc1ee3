"""BEiT's masked image modelling loss (Bao et al. 2022, arXiv:2106.08254, Eq. 1): cross-entropy of the
visual token at masked positions only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedTokenCrossEntropy(nn.Module):
    """Mean cross-entropy over the masked positions; unmasked positions contribute nothing."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """logits: (B, N, K); targets: (B, N) long token ids; mask: (B, N) bool, True = masked -> scalar."""
        if not bool(mask.any()):
            raise ValueError("mask selects no position: the loss is undefined")
        return F.cross_entropy(logits[mask].float(), targets.detach()[mask])  # (M, K) vs (M,)
