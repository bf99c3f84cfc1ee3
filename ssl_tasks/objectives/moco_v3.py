"""MoCo v3: a query network with predictor contrasts against in-batch keys of a momentum network.

Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021,
arXiv:2104.02057. No queue: the keys of the current batch (from all workers) are the candidates;
the momentum encoder + projector follow the query side by EMA with a cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.core.ema import cosine_momentum, frozen_copy
from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.batch_info_nce import BatchInfoNCELoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class MoCoV3Config:
    """Paper (ViT): temperature 0.2, momentum 0.99 -> 1 (cosine), 3-layer projector and 2-layer predictor,
    4096 hidden -> 256 out, BN in every hidden layer and after the projector's output.

    Widths default smaller here (512 -> 128) to suit small encoders. The paper uses 2 projector layers and
    temperature 1.0 for ResNets. Its ViT trick of a frozen random patch embedding is not applied.
    """

    temperature: float = 0.2
    base_momentum: float = 0.99
    proj_layers: int = 3
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    pred_hidden_dim: int = 512
    gather_distributed: bool = True
    views: ImageViewConfig = field(default_factory=ImageViewConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.base_momentum <= 1:
            raise ValueError(f"base_momentum must be in [0, 1], got {self.base_momentum}")
        if self.proj_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {self.proj_layers}")


@OBJECTIVES.register("moco_v3")
class MoCoV3(Objective):
    Config = MoCoV3Config

    def __init__(self, encoder: nn.Module, cfg: MoCoV3Config, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, num_layers=2)
        self.momentum_encoder = frozen_copy(encoder)
        self.momentum_projector = frozen_copy(self.projector)
        self.criterion = BatchInfoNCELoss(cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors; loss = ctr(q1, k2) + ctr(q2, k1).

        Each view passes through the networks on its own, as in the paper, so BatchNorm statistics
        never mix the two views of a sample.
        """
        x1, x2 = views
        h1, h2 = self.encoder(x1), self.encoder(x2)  # (B, D) each
        q1, q2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # (B, P) each
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(x1))  # (B, P)
            k2 = self.momentum_projector(self.momentum_encoder(x2))  # (B, P)
        loss = self.criterion(q1, q2, k1, k2)
        return StepResult(loss=loss, terms={"info_nce_loss": loss.detach()}, embeddings=(h1.detach(), h2.detach()),
                          report={"temperature": self.cfg.temperature})

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.momentum_encoder), (self.projector, self.momentum_projector)]

    def momentum(self, progress: float) -> float:
        return cosine_momentum(self.cfg.base_momentum, progress)
