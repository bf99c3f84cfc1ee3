"""Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, arXiv:2103.03230)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_tasks.core.distributed import gather_with_grad, world


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """(N, D) -> per-dimension zero mean, unit (biased) variance over the batch: BatchNorm without affine."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


class BarlowTwinsLoss(nn.Module):
    """Push the cross-correlation matrix of the two views' standardised projections towards the identity.

    ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``; with ``gather_distributed`` the batch
    statistics and C span every worker's samples, as the paper's all-reduced BatchNorm does.
    """

    def __init__(self, lambd: float = 5e-3, gather_distributed: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if lambd < 0:
            raise ValueError(f"lambd must be >= 0, got {lambd}")
        self.lambd, self.gather_distributed, self.eps = lambd, gather_distributed, eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """z1, z2: (B, D) projections of two views of the same samples -> scalar."""
        if self.gather_distributed and world()[1] > 1:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # (W*B, D)
        n = z1.shape[0]
        if n < 2:
            raise ValueError("Barlow Twins needs a batch of at least 2 samples for its statistics")
        c = _standardise(z1, self.eps).T @ _standardise(z2, self.eps) / n  # (D, D)
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambd * off_diag
