"""SimCSE's in-batch contrastive loss (Gao, Yao, Chen 2021, arXiv:2104.08821, Eq. 1).

Two encodings of the same sentence that differ only in their dropout masks are positives; the other
sentences of the batch (of every worker, gathered with gradient) are negatives:
``-log exp(sim(h_i, h_i') / T) / sum_j exp(sim(h_i, h_j') / T)`` with cosine similarity, averaged over i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import gather_with_grad, world


class SimCSELoss(nn.Module):
    def __init__(self, temperature: float = 0.05, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """z1, z2: (B, D) two encodings of the same B sentences -> scalar."""
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        rank, ws = world() if self.gather_distributed else (0, 1)
        keys = gather_with_grad(z2) if ws > 1 else z2  # (W*B, D)
        logits = z1 @ keys.T / self.temperature  # (B, W*B)
        labels = torch.arange(z1.shape[0], device=z1.device) + rank * z1.shape[0]
        return F.cross_entropy(logits, labels)
