"""InfoNCE against a FIFO queue of keys: MoCo (He et al. 2019, arXiv:1911.05722; v2: arXiv:2003.04297)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueue(nn.Module):
    """A FIFO of the K most recent keys, kept as a buffer so it checkpoints with the model.

    Rows are overwritten in arrival order at ``ptr``; ``ordered()`` returns them oldest first.
    """

    queue: torch.Tensor
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))  # (K, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """keys: (N, D); the oldest N rows are replaced (N may exceed K: the newest K are kept)."""
        k = self.size
        keys = keys.detach()[-k:]
        n = keys.shape[0]
        idx = (self.ptr + torch.arange(n, device=keys.device)) % k  # (N,)
        self.queue[idx] = keys.to(self.queue.dtype)
        self.ptr.copy_((self.ptr + n) % k)
        self.filled.copy_(torch.clamp(self.filled + n, max=k))

    def ordered(self) -> torch.Tensor:
        """(K, D) rows oldest first."""
        return torch.roll(self.queue, shifts=-int(self.ptr), dims=0)


class QueueInfoNCELoss(nn.Module):
    """Cross entropy where each query's positive is its key and the negatives are the queue."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """q, k: (B, D) (k without grad), queue: (K, D) -> scalar."""
        q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
        pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        neg = q @ queue.detach().T  # (B, K)
        logits = torch.cat([pos, neg], dim=1) / self.temperature  # (B, 1+K)
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
