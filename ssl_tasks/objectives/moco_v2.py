"""MoCo v2: a momentum key encoder and a queue of negatives, with an MLP head.

He et al. "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
arXiv:1911.05722; Chen et al. "Improved Baselines with Momentum Contrastive Learning",
arXiv:2003.04297. Keys from all workers enter the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.core.distributed import gather_no_grad
from ssl_tasks.core.ema import frozen_copy
from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.queue_info_nce import FeatureQueue, QueueInfoNCELoss
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class MoCoV2Config:
    """Paper: queue 65536, momentum 0.999, temperature 0.2, 2-layer MLP head to 128-d.

    ``symmetric`` adds the swapped (k, q) term, as MoCo v3 and most re-implementations do.
    """

    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    symmetric: bool = False
    views: ImageViewConfig = field(default_factory=ImageViewConfig)


@OBJECTIVES.register("moco_v2")
class MoCoV2(Objective):
    Config = MoCoV2Config

    def __init__(self, encoder: nn.Module, cfg: MoCoV2Config, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        if not 0 <= cfg.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {cfg.momentum}")
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden_dim, cfg.proj_dim)
        self.key_encoder = frozen_copy(encoder)
        self.key_projector = frozen_copy(self.projector)
        self.queue = FeatureQueue(cfg.queue_size, cfg.proj_dim)
        self.criterion = QueueInfoNCELoss(cfg.temperature)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two (B, C, S, S) tensors: queries from the first, keys from the second."""
        x1, x2 = views
        h = self.encoder(torch.cat([x1, x2]) if self.cfg.symmetric else x1)  # (2B or B, D)
        q = self.projector(h)  # (2B or B, P)
        with torch.no_grad():
            xk = torch.cat([x2, x1]) if self.cfg.symmetric else x2
            k = nn.functional.normalize(self.key_projector(self.key_encoder(xk)), dim=1)  # like q
        queue = self.queue.queue.clone()  # (K, P) negatives from earlier steps only
        loss = self.criterion(q, k, queue)
        b = x1.shape[0]
        self.queue.enqueue(gather_no_grad(k[:b]))
        if self.cfg.symmetric:
            h1, h2 = h.detach().chunk(2)
        else:
            h1 = h.detach()
            with torch.no_grad():
                h2 = self.key_encoder(x2)
        return StepResult(loss=loss, terms={"info_nce_loss": loss.detach()}, embeddings=(h1, h2),
                          report={"queue_filled": float(self.queue.filled)})

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.key_encoder), (self.projector, self.key_projector)]

    def momentum(self, progress: float) -> float:
        return self.cfg.momentum
