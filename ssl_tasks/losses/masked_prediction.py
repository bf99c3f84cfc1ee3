"""HuBERT's masked prediction loss (Hsu et al. 2021, arXiv:2106.07447, Eq. 2 with alpha = 1): cross-entropy of
each masked frame's cluster target; unmasked frames and padding (target -100) contribute nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # the target of a frame beyond a clip's valid frames


class MaskedPredictionLoss(nn.Module):
    """Mean cross-entropy over the masked frames that have a target; also returns the accuracy on them."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits: (B, F, K); targets: (B, F) int64 in [0, K) or -100; mask: (B, F) bool -> (loss, accuracy)."""
        sel = mask & (targets != IGNORE)  # (B, F)
        if not bool(sel.any()):
            raise ValueError("the mask selects no frame with a target: the loss is undefined")
        picked, y = logits[sel].float(), targets.detach()[sel]  # (M, K), (M,)
        loss = F.cross_entropy(picked, y)
        return loss, (picked.argmax(1) == y).float().mean().detach()
