"""Barlow Twins: the two views' cross-correlation matrix is pushed towards the identity.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, arXiv:2103.03230.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.barlow_twins import BarlowTwinsLoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class BarlowTwinsConfig:
    """Paper: 3-layer projector of 8192 units, lambda 5e-3 (about 1/D). Widths default to 512 here."""

    lambd: float = 5e-3
    proj_hidden_dim: int = 512
    proj_dim: int = 512
    gather_distributed: bool = True
    views: ImageViewConfig = field(default_factory=ImageViewConfig)


@OBJECTIVES.register("barlow_twins")
class BarlowTwins(Objective):
    Config = BarlowTwinsConfig

    def __init__(self, encoder: nn.Module, cfg: BarlowTwinsConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=3)
        self.criterion = BarlowTwinsLoss(cfg.lambd, gather_distributed=cfg.gather_distributed)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors."""
        h = self.encoder(torch.cat(views))  # (2B, D)
        z1, z2 = self.projector(h).chunk(2)  # (B, P) each
        loss = self.criterion(z1, z2)
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={"barlow_loss": loss.detach()}, embeddings=(h1, h2),
                          projections=(z1.detach(), z2.detach()), report={"lambd": self.cfg.lambd})
