"""RotNet: predict which of four rotations (0, 90, 180, 270 degrees) was applied to an image.

Gidaris, Singh, Komodakis. "Unsupervised Representation Learning by Predicting Image Rotations",
ICLR 2018, arXiv:1803.07728.

Each image gets ``copies`` distinct rotations drawn from the generator (the paper feeds all four
rotated copies of every image in the same batch, its best setting: ``copies=4``); the encoder's
pooled features go through a small MLP head to 4 logits, trained with cross-entropy. The head is
discarded after pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult

NUM_ROTATIONS = 4


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) images, (B, V) quarter turns -> (B, V, C, S, S), copy v rotated by k[b, v] * 90 deg.

    ``torch.rot90`` semantics (counter-clockwise in the (H, W) plane); ``rotate(y, -k)`` undoes it.
    """
    k = k % NUM_ROTATIONS
    every = torch.stack([x.rot90(j, dims=(2, 3)) for j in range(NUM_ROTATIONS)], dim=1)  # (B, 4, C, S, S)
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (B, 1)
    return every[rows, k]  # (B, V, C, S, S)


def views_config() -> ImageViewConfig:
    """Light crop and horizontal flip only (a vertical flip would be confused with a 180-degree turn)."""
    return ImageViewConfig(crop_scale=(0.5, 1.0), hflip_p=0.5, jitter_p=0.0, grayscale_p=0.0)


@dataclass(frozen=True)
class RotationConfig:
    """``copies``: distinct rotations per image in 2..4 (paper: 4; two give the monitors two views); MLP head."""

    copies: int = 4
    head_hidden_dim: int = 256
    views: ImageViewConfig = field(default_factory=views_config)

    def __post_init__(self) -> None:
        if not 2 <= self.copies <= NUM_ROTATIONS:
            raise ValueError(f"copies must be in 2..{NUM_ROTATIONS}, got {self.copies}")


@OBJECTIVES.register("rotation")
class Rotation(Objective):
    Config = RotationConfig

    def __init__(self, encoder: nn.Module, cfg: RotationConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.head = mlp(encoder.out_dim, cfg.head_hidden_dim, NUM_ROTATIONS)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> [rotated (B, V, C, S, S), quarter turns (B, V) long]."""
        base = self.view_fn(x, g)  # (B, C, S, S)
        order = torch.rand(base.shape[0], NUM_ROTATIONS, generator=g, device=g.device).argsort(dim=1)  # (B, 4)
        k = order[:, : self.cfg.copies].to(base.device)  # (B, V) distinct rotations per image
        return [rotate(base, k), k]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: rotated copies (B, V, C, S, S) and their labels (B, V)."""
        x, k = views
        b, v = k.shape
        h = self.encoder(x.flatten(0, 1))  # (B*V, D)
        logits = self.head(h)  # (B*V, 4)
        target = k.reshape(-1)  # (B*V,)
        loss = F.cross_entropy(logits, target)
        acc = (logits.detach().argmax(dim=1) == target).float().mean()
        h = h.detach().view(b, v, -1)  # (B, V, D)
        return StepResult(loss=loss, terms={"rotation_loss": loss.detach()}, embeddings=(h[:, 0], h[:, 1]),
                          report={"pretext_acc": float(acc)})
