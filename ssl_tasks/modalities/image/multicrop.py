"""Multi-crop views: two global crops at the data's size and N smaller local crops.

Caron et al. "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (SwAV),
NeurIPS 2020, arXiv:2006.09882; scales as in DINO (Caron et al. 2021, arXiv:2104.14294): global
crops cover 40-100% of the image, local crops 5-40%. Each crop kind is one batched ``ImageViews``
call (crop, flip, colour, blur from ``views.py``) with its own scale and output size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews

GLOBAL_CROPS = 2


@dataclass(frozen=True)
class MultiCropConfig:
    """Crop geometry; photometric settings (flip, jitter, blur) come from the ``ImageViewConfig``.

    ``local_size`` None means ``default_local_size(image_size, patch_size)``: about half the side.
    DINO's reference code uses 8 local crops (the paper's best ViT-S/16 runs use 10).
    """

    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_crops: int = 8
    local_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < lo <= hi <= 1, got {getattr(self, name)}")
        if self.local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {self.local_crops}")
        if self.local_size is not None and self.local_size < 1:
            raise ValueError(f"local_size must be >= 1 or null, got {self.local_size}")


def default_local_size(image_size: int, patch_size: int = 1) -> int:
    """Half the side, rounded down to a multiple of ``patch_size`` so a ViT tiles it exactly.

    8 -> 4 (patch 1, 2 or 4); 28 -> 14 (patch 1, 2, 7) or 12 (patch 4); 32 -> 16 (patch 1-16).
    When half the side is smaller than one patch, one patch (if it fits the image) is used instead;
    failing that, plain half the side.
    """
    half = max(1, image_size // 2)
    size = half // patch_size * patch_size
    if size == 0:
        size = patch_size if patch_size <= image_size else half
    return size


class MultiCrop:
    """uint8 (B, C, H, W) -> [2 global (B, C, S, S)] + [N local (B, C, s, s)], global views first."""

    def __init__(self, crops: MultiCropConfig, views: ImageViewConfig, mean: torch.Tensor, std: torch.Tensor,
                 image_size: int, patch_size: int = 1) -> None:
        self.cfg = crops
        self.global_size = image_size
        self.local_size = crops.local_size or default_local_size(image_size, patch_size)
        self.global_view = ImageViews(replace(views, crop_scale=crops.global_scale), mean, std, image_size)
        self.local_view = ImageViews(replace(views, crop_scale=crops.local_scale), mean, std, self.local_size)

    @property
    def num_views(self) -> int:
        return GLOBAL_CROPS + self.cfg.local_crops

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        x = x.float().div_(255) if x.dtype == torch.uint8 else x  # once, not per crop
        out = [self.global_view(x, g) for _ in range(GLOBAL_CROPS)]  # 2 x (B, C, S, S)
        out += [self.local_view(x, g) for _ in range(self.cfg.local_crops)]  # N x (B, C, s, s)
        return out
