"""SimSiam: a predictor and a stop-gradient, no negatives and no momentum encoder.

Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021, arXiv:2011.10566.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.negative_cosine import NegativeCosineLoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class SimSiamConfig:
    """Paper: 3-layer projector to 2048-d with BN on its output, 2-layer bottleneck predictor (2048 -> 512 -> 2048).

    Widths default smaller here (512, predictor bottleneck 128) to suit small encoders.
    ``stop_gradient: false`` removes the stop-gradient: the paper's ablation, which collapses.
    """

    proj_hidden_dim: int = 512
    proj_dim: int = 512
    pred_hidden_dim: int = 128
    stop_gradient: bool = True
    views: ImageViewConfig = field(default_factory=ImageViewConfig)


@OBJECTIVES.register("simsiam")
class SimSiam(Objective):
    Config = SimSiamConfig

    def __init__(self, encoder: nn.Module, cfg: SimSiamConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=3, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim)
        self.criterion = NegativeCosineLoss(stop_gradient=cfg.stop_gradient)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors; each view's prediction regresses the other's projection."""
        h = self.encoder(torch.cat(views))  # (2B, D)
        z = self.projector(h)  # (2B, P)
        p1, p2 = self.predictor(z).chunk(2)  # (B, P) each
        z1, z2 = z.chunk(2)
        loss = 0.5 * (self.criterion(p1, z2) + self.criterion(p2, z1))
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={"regression_loss": loss.detach()}, embeddings=(h1, h2),
                          projections=(z1.detach(), z2.detach()))
