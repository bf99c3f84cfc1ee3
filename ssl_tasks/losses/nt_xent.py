"""NT-Xent, the normalised temperature-scaled cross entropy of SimCLR (Chen et al. 2020, arXiv:2002.05709)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import gather_with_grad, world


class NTXentLoss(nn.Module):
    """Each of the 2B views must pick its partner among the other 2B-1 (2WB-1 with gathering)."""

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """z1, z2: (B, D) projections of two views of the same B samples -> scalar."""
        b = z1.shape[0]
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        rank, ws = world() if self.gather_distributed else (0, 1)
        a1, a2 = (gather_with_grad(z1), gather_with_grad(z2)) if ws > 1 else (z1, z2)  # (W*B, D)
        n = a1.shape[0]
        cand = torch.cat([a1, a2], dim=0)  # (2N, D)
        anchors = torch.cat([z1, z2], dim=0)  # (2B, D)
        logits = anchors @ cand.T / self.temperature  # (2B, 2N)
        local = torch.arange(b, device=z1.device) + rank * b  # (B,) global index of local samples
        self_idx = torch.cat([local, local + n])  # (2B,) each anchor's own column
        pos_idx = torch.cat([local + n, local])  # (2B,) its partner's column
        logits = logits.scatter(1, self_idx.view(-1, 1), float("-inf"))
        return F.cross_entropy(logits, pos_idx)
