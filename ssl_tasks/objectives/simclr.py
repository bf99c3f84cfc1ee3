"""SimCLR: two augmented views, an MLP projector and the NT-Xent loss.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv:2002.05709.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.nt_xent import NTXentLoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class SimCLRConfig:
    """Paper defaults: 2-layer projector to 128-d, temperature 0.5 (CIFAR-10 setting)."""

    temperature: float = 0.5
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    gather_distributed: bool = True
    views: ImageViewConfig = field(default_factory=ImageViewConfig)


@OBJECTIVES.register("simclr")
class SimCLR(Objective):
    Config = SimCLRConfig

    def __init__(self, encoder: nn.Module, cfg: SimCLRConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim)
        self.criterion = NTXentLoss(cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors."""
        x1, x2 = views
        h = self.encoder(torch.cat([x1, x2]))  # (2B, D)
        z1, z2 = self.projector(h).chunk(2)  # (B, P) each
        loss = self.criterion(z1, z2)
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={"nt_xent_loss": loss.detach()}, embeddings=(h1, h2),
                          projections=(z1.detach(), z2.detach()), report={"temperature": self.cfg.temperature})
