"""Context prediction: where does a patch sit relative to the centre patch of a 3x3 grid?

Doersch, Gupta, Efros. "Unsupervised Visual Representation Learning by Context Prediction",
ICCV 2015, arXiv:1505.05192.

Each view is cut into a 3x3 grid (``ssl_tasks.modalities.image.grid``); the centre patch and one of
its 8 neighbours, drawn from the generator, go through the shared encoder and an MLP head on the
concatenated features predicts which neighbour it was (8-way cross-entropy). The paper's patches
are 96 px with a 48 px gap and 7 px jitter; tiny images cannot afford that, so the gap is a
fraction of the cell (default 1/4: 2 px patches on 8x8 images, 7 px on 28x28, 8 px on 32x32), and
patches are resampled to ``patch_size`` (default: the data's image size) before the encoder, so
every registry encoder accepts them unchanged (a ViT needs a size divisible by its patch size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.modalities.image.grid import cut_tiles
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult

CENTRE = 4
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # label i -> grid cell NEIGHBOURS[i], reading order around the centre


def views_config() -> ImageViewConfig:
    """Light crop and flip; no colour jitter (the grid's gap and jitter are the augmentation)."""
    return ImageViewConfig(crop_scale=(0.6, 1.0), hflip_p=0.5, jitter_p=0.0, grayscale_p=0.0)


@dataclass(frozen=True)
class RelativePositionConfig:
    """``gap``: fraction of a cell's side between patches; ``jitter``: random shift inside the cell."""

    gap: float = 0.25
    jitter: bool = True
    patch_size: int | None = None  # encoder input side; None: the data's image size
    head_hidden_dim: int = 256
    views: ImageViewConfig = field(default_factory=views_config)

    def __post_init__(self) -> None:
        if not 0 <= self.gap < 1:
            raise ValueError(f"gap must be in [0, 1), got {self.gap}")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1 or null, got {self.patch_size}")


@OBJECTIVES.register("relative_position")
class RelativePosition(Objective):
    Config = RelativePositionConfig

    def __init__(self, encoder: nn.Module, cfg: RelativePositionConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.patch_size = cfg.patch_size or data.image_size
        self.head = mlp(2 * encoder.out_dim, cfg.head_hidden_dim, len(NEIGHBOURS))
        self.register_buffer("neighbours", torch.tensor(NEIGHBOURS), persistent=False)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> [patches (B, 2, C, P, P): centre then neighbour, label (B,) in 0..7]."""
        base = self.view_fn(x, g)  # (B, C, S, S)
        b = base.shape[0]
        label = torch.randint(0, len(NEIGHBOURS), (b,), generator=g, device=g.device).to(base.device)  # (B,)
        centre = torch.full_like(label, CENTRE)
        cells = torch.stack([centre, self.neighbours[label]], dim=1)  # (B, 2)
        patches = cut_tiles(base, cells, self.cfg.gap, self.cfg.jitter, self.patch_size, g)  # (B, 2, C, P, P)
        return [patches, label]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: patches (B, 2, C, P, P) (centre, neighbour) and the neighbour's label (B,)."""
        patches, label = views
        b = label.shape[0]
        h = self.encoder(patches.flatten(0, 1)).view(b, 2, -1)  # (B, 2, D)
        logits = self.head(h.flatten(1))  # (B, 8) from [h_centre, h_neighbour]
        loss = F.cross_entropy(logits, label)
        acc = (logits.detach().argmax(dim=1) == label).float().mean()
        h = h.detach()
        return StepResult(loss=loss, terms={"relative_position_loss": loss.detach()}, embeddings=(h[:, 0], h[:, 1]),
                          report={"pretext_acc": float(acc)})
