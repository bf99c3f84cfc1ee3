"""MoCo v3's symmetric InfoNCE against in-batch momentum keys, no queue.

Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021,
arXiv:2104.02057 (Algorithm 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import gather_no_grad, world


class BatchInfoNCELoss(nn.Module):
    """ctr(q1, k2) + ctr(q2, k1): each query must pick its own sample's key among all keys of the batch.

    ``ctr`` is cross entropy over cosine logits / temperature, multiplied by 2 * temperature as in the
    paper (this keeps the gradient scale roughly independent of the temperature). Keys carry no gradient;
    with ``gather_distributed`` they come from every worker (W*B candidates per query).
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def contrastive(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q: (B, D) queries, k: (B, D) keys (detached here) of the same B samples -> scalar."""
        q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
        rank, ws = world() if self.gather_distributed else (0, 1)
        keys = gather_no_grad(k) if ws > 1 else k  # (W*B, D)
        logits = q @ keys.T / self.temperature  # (B, W*B)
        labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]  # (B,) own key's column
        return F.cross_entropy(logits, labels) * (2 * self.temperature)

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        """q1, q2: (B, D) predictions of views 1, 2; k1, k2: (B, D) momentum keys of views 1, 2 -> scalar."""
        return self.contrastive(q1, k2) + self.contrastive(q2, k1)
