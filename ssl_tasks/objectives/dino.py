"""DINO: self-distillation with no labels; an EMA teacher on global crops supervises a multi-crop student.

Caron et al. "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294.
The teacher (encoder + head) is an EMA of the student with a cosine momentum schedule; its outputs
are centred and sharpened (``DINOLoss``). The teacher encoder is the one kept for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.core.ema import cosine_momentum, frozen_copy
from ssl_tasks.heads.dino import DINOHead
from ssl_tasks.losses.dino import DINOLoss, teacher_temperature
from ssl_tasks.modalities.image.multicrop import GLOBAL_CROPS, MultiCrop, MultiCropConfig
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


@dataclass(frozen=True)
class DINOConfig:
    """Paper (ViT-S/16): head 2048 -> bottleneck 256 -> K = 65536 prototypes, student temperature 0.1,
    teacher temperature 0.04 -> 0.07 over the first 30% of training, centre momentum 0.9, teacher momentum
    0.996 -> 1 (cosine), last layer frozen for the first epoch of 100; 2 global + 8-10 local crops.

    The head defaults smaller here (512 -> 128 -> K = 1024) to suit small encoders and tiny data sets.
    ``views`` sets flip, colour and blur for every crop; its ``crop_scale`` is unused (``crops`` sets the scales).
    """

    num_prototypes: int = 1024
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    head_layers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_fraction: float = 0.3
    center_momentum: float = 0.9
    base_momentum: float = 0.996
    freeze_last_layer_fraction: float = 0.01
    gather_distributed: bool = True
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    views: ImageViewConfig = field(default_factory=ImageViewConfig)

    def __post_init__(self) -> None:
        for name in ("teacher_temp", "warmup_teacher_temp", "student_temp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_teacher_temp_fraction", "center_momentum", "base_momentum", "freeze_last_layer_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@OBJECTIVES.register("dino")
class DINO(Objective):
    Config = DINOConfig

    def __init__(self, encoder: nn.Module, cfg: DINOConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        mean, std = torch.tensor(data.mean), torch.tensor(data.std)
        patch = getattr(encoder, "patch_size", 1)  # local crops tile exactly into ViT patches
        self.multicrop = MultiCrop(cfg.crops, cfg.views, mean, std, data.image_size, patch)
        self.head = DINOHead(encoder.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.num_prototypes,
                             cfg.head_layers, cfg.norm_last_layer)
        self.teacher_encoder = frozen_copy(encoder)
        self.teacher_head = frozen_copy(self.head)
        self.criterion = DINOLoss(cfg.num_prototypes, cfg.student_temp, cfg.center_momentum, cfg.gather_distributed)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> 2 global (B, C, S, S) then N local (B, C, s, s) normalised views."""
        return self.multicrop(x, g)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: global crops first (the teacher's input), then local crops (student only)."""
        v, b = len(views), views[0].shape[0]
        xg = torch.cat(views[:GLOBAL_CROPS])  # (2B, C, S, S)
        h = self.encoder(xg)  # (2B, D)
        if v > GLOBAL_CROPS:  # one pass per resolution
            h = torch.cat([h, self.encoder(torch.cat(views[GLOBAL_CROPS:]))])  # (V*B, D)
        s = self.head(h).view(v, b, -1)  # (V, B, K)
        with torch.no_grad():
            ht = self.teacher_encoder(xg)  # (2B, D)
            t = self.teacher_head(ht).view(GLOBAL_CROPS, b, -1)  # (2, B, K)
        cfg = self.cfg
        temp = teacher_temperature(self.progress, cfg.warmup_teacher_temp, cfg.teacher_temp,
                                   cfg.warmup_teacher_temp_fraction)
        loss = self.criterion(s, t, temp)
        h1, h2 = ht.chunk(2)  # the teacher's features: the encoder kept for evaluation
        return StepResult(loss=loss, terms={"dino_loss": loss.detach()}, embeddings=(h1, h2),
                          report={"teacher_temp": temp})

    def after_backward(self) -> None:
        """The paper's last-layer freeze: no update of the prototypes during the first part of training."""
        if self.progress < self.cfg.freeze_last_layer_fraction:
            for p in self.head.last_layer():
                p.grad = None

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.teacher_encoder), (self.head, self.teacher_head)]

    def momentum(self, progress: float) -> float:
        return cosine_momentum(self.cfg.base_momentum, progress)

    @property
    def eval_encoder(self) -> nn.Module:
        return self.teacher_encoder
