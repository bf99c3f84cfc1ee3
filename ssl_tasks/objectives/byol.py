"""BYOL: an online network with predictor regresses an EMA target network's projection.

Grill et al. "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.core.ema import cosine_momentum, frozen_copy
from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.negative_cosine import NegativeCosineLoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class BYOLConfig:
    """Paper: projector/predictor 4096 -> 256, base momentum 0.996 with cosine increase to 1.

    Widths default smaller here (512 -> 128) to suit small encoders.
    """

    base_momentum: float = 0.996
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    pred_hidden_dim: int = 512
    views: ImageViewConfig = field(default_factory=ImageViewConfig)


@OBJECTIVES.register("byol")
class BYOL(Objective):
    Config = BYOLConfig

    def __init__(self, encoder: nn.Module, cfg: BYOLConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        if not 0 <= cfg.base_momentum <= 1:
            raise ValueError(f"base_momentum must be in [0, 1], got {cfg.base_momentum}")
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim)
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)
        self.criterion = NegativeCosineLoss()

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors; the loss is symmetrised over the two orders."""
        x = torch.cat(views)  # (2B, C, S, S)
        h = self.encoder(x)  # (2B, D)
        p1, p2 = self.predictor(self.projector(h)).chunk(2)  # (B, P) each
        with torch.no_grad():
            t1, t2 = self.target_projector(self.target_encoder(x)).chunk(2)  # (B, P) each
        loss = 0.5 * (self.criterion(p1, t2) + self.criterion(p2, t1))
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={"regression_loss": loss.detach()}, embeddings=(h1, h2))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def momentum(self, progress: float) -> float:
        return cosine_momentum(self.cfg.base_momentum, progress)
