"""CLIP: contrastive language–image pretraining (Radford et al., ICML 2021, arXiv:2103.00020).

Symmetric InfoNCE over image->text and text->image (``losses/clip.py``) with a learnable logit scale,
initialised to 1/0.07 and clamped at 100 as in the paper (Sec. 2.5); negatives are every worker's pairs,
gathered with gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ssl_tasks.losses.clip import CLIPLoss, clamp_logit_scale
from ssl_tasks.objectives.base import OBJECTIVES, PairDataSpec
from ssl_tasks.objectives.image_text import ImageTextConfig, ImageTextObjective


@dataclass(frozen=True)
class CLIPConfig(ImageTextConfig):
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        from ssl_tasks.core.errors import UserError

        if not (self.init_temperature > 0 and 1 / self.init_temperature <= self.max_logit_scale):
            raise UserError(f"init_temperature must be in [1/max_logit_scale, inf), got {self.init_temperature}")


@OBJECTIVES.register("clip")
class CLIP(ImageTextObjective):
    Config = CLIPConfig
    loss_name = "clip_loss"

    def __init__(self, encoder: nn.Module, cfg: CLIPConfig, data: PairDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))
        self.loss_fn = CLIPLoss()

    def loss(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        scale = clamp_logit_scale(self.log_scale, self.cfg.max_logit_scale)
        return self.loss_fn(image, text, scale), {"logit_scale": float(scale.detach())}
