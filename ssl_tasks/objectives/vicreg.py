"""VICReg: invariance between views, variance kept above a floor, covariance pushed to zero.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, arXiv:2105.04906.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.vicreg import VICRegLoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class VICRegConfig:
    """Paper: weights 25 / 25 / 1, 3-layer expander of 8192 units. Widths default to 512 here."""

    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    proj_hidden_dim: int = 512
    proj_dim: int = 512
    gather_distributed: bool = True
    views: ImageViewConfig = field(default_factory=ImageViewConfig)


@OBJECTIVES.register("vicreg")
class VICReg(Objective):
    Config = VICRegConfig

    def __init__(self, encoder: nn.Module, cfg: VICRegConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=3)
        self.criterion = VICRegLoss(cfg.sim_weight, cfg.var_weight, cfg.cov_weight,
                                    gather_distributed=cfg.gather_distributed)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors."""
        h = self.encoder(torch.cat(views))  # (2B, D)
        z1, z2 = self.projector(h).chunk(2)  # (B, P) each
        t = self.criterion.terms(z1, z2)
        c = self.cfg
        loss = c.sim_weight * t["invariance_loss"] + c.var_weight * t["variance_loss"] + c.cov_weight * t["covariance_loss"]
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={k: v.detach() for k, v in t.items()}, embeddings=(h1, h2),
                          projections=(z1.detach(), z2.detach()))
