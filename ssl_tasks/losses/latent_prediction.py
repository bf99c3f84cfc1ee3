"""I-JEPA's loss (Assran et al. "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023, arXiv:2301.08243): distance between predicted and target representations."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class LatentPredictionLoss(nn.Module):
    """Mean over target tokens and features of ``(p - t)**2`` (the paper's L2) or smooth L1.

    The paper writes the loss as the squared L2 distance averaged over target tokens; averaging over
    features too only divides it by D. Its released code uses smooth L1 (Huber with beta 1), offered
    here as ``kind="smooth_l1"``. The target is a constant: no gradient reaches it.
    """

    def __init__(self, kind: Literal["mse", "smooth_l1"] = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "smooth_l1"):
            raise ValueError(f"kind must be 'mse' or 'smooth_l1', got {kind!r}")
        self.kind = kind

    def forward(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p, t: (..., D) predicted and target features of the same tokens (e.g. (B, M, T, D)) -> scalar."""
        if self.kind == "mse":
            return F.mse_loss(p, t.detach())
        return F.smooth_l1_loss(p, t.detach(), beta=1.0)
