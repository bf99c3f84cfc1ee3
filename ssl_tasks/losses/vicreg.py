"""VICReg: variance, invariance, covariance regularisation (Bardes, Ponce, LeCun 2022, arXiv:2105.04906)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import gather_with_grad, world


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """(N, D) -> mean over dimensions of relu(gamma - std): a hinge that keeps each dimension spread."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """(N, D) -> sum of squared off-diagonal covariances / D: decorrelates the dimensions."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)  # (D, D)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


class VICRegLoss(nn.Module):
    """``sim_weight * MSE(z1, z2) + var_weight * (v(z1) + v(z2)) / 2 + cov_weight * (c(z1) + c(z2))``.

    Paper weights 25 / 25 / 1. The invariance term is per sample; the variance and covariance terms
    are batch statistics, taken over every worker's samples when ``gather_distributed``.
    """

    def __init__(self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 gather_distributed: bool = True) -> None:
        super().__init__()
        if min(sim_weight, var_weight, cov_weight) < 0:
            raise ValueError("VICReg weights must be >= 0")
        self.sim_weight, self.var_weight, self.cov_weight = sim_weight, var_weight, cov_weight
        self.gather_distributed = gather_distributed

    def terms(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        """z1, z2: (B, D) -> the three unweighted terms."""
        inv = F.mse_loss(z1, z2)
        if self.gather_distributed and world()[1] > 1:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # (W*B, D)
        if z1.shape[0] < 2:
            raise ValueError("VICReg needs a batch of at least 2 samples for its variance and covariance terms")
        var = 0.5 * (variance_term(z1) + variance_term(z2))
        cov = covariance_term(z1) + covariance_term(z2)
        return {"invariance_loss": inv, "variance_loss": var, "covariance_loss": cov}

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        t = self.terms(z1, z2)
        return (self.sim_weight * t["invariance_loss"] + self.var_weight * t["variance_loss"]
                + self.cov_weight * t["covariance_loss"])
