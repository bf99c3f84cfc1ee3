"""SigLIP: sigmoid loss for language–image pretraining (Zhai et al., ICCV 2023, arXiv:2303.15343).

Every image–caption pair of the batch is an independent binary problem (``losses/siglip.py``) with a
learnable temperature t = exp(t') and bias b, initialised to t' = log 10 and b = -10 (paper Sec. 3.2). Across
workers the caption chunks travel round a ring: no worker ever builds the full similarity matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssl_tasks.losses.siglip import INIT_BIAS, INIT_LOG_TEMPERATURE, SigLIPLoss
from ssl_tasks.objectives.base import OBJECTIVES, PairDataSpec
from ssl_tasks.objectives.image_text import ImageTextConfig, ImageTextObjective


@dataclass(frozen=True)
class SigLIPConfig(ImageTextConfig):
    init_log_temperature: float = INIT_LOG_TEMPERATURE
    init_bias: float = INIT_BIAS


@OBJECTIVES.register("siglip")
class SigLIP(ImageTextObjective):
    Config = SigLIPConfig
    loss_name = "siglip_loss"

    def __init__(self, encoder: nn.Module, cfg: SigLIPConfig, data: PairDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.log_temperature = nn.Parameter(torch.tensor(float(cfg.init_log_temperature)))
        self.bias = nn.Parameter(torch.tensor(float(cfg.init_bias)))
        self.loss_fn = SigLIPLoss()

    def loss(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.log_temperature.exp()
        return self.loss_fn(image, text, t, self.bias), {"temperature": float(t.detach()),
                                                         "bias": float(self.bias.detach())}
