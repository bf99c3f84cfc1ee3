"""Colorization: predict an image's colour (ab in CIE Lab) from its lightness (L).

Zhang, Isola, Efros. "Colorful Image Colorization", ECCV 2016, arXiv:1603.08511.

Simplified for tiny images. Like the paper, colour is *classified* over a grid of quantised ab
bins with cross-entropy (regression to the mean ab of a multimodal distribution gives greyish
colours, the paper's argument; classification also yields an accuracy to watch). The paper's
313 in-gamut bins of side 10 are coarsened to side 20 (11 x 11 = 121 bins over [-110, 110)^2),
so a few thousand tiny images still fill the used bins; its soft encoding and class rebalancing
are left out. Targets are predicted at up to ``target_size`` (paper: 1/4 of the input).

The registry encoder is kept unchanged (built for 3 channels, evaluated on colour images later):
it receives the colour-free version of each view, the sRGB grey with the same L replicated to 3
channels and normalised with the data statistics. It outputs only pooled features (B, D), so
the light decoder is a per-pixel MLP (1x1 convolutions) over [global features, the pixel's L,
its (y, x) coordinates]: with no spatial context of its own it must learn where which colour
goes from the encoder's features. Decoder discarded after pretraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult

AB_RANGE = 110.0  # |a|, |b| bound of the sRGB gamut in Lab (about -86..98 for a, -108..95 for b)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y <= 0.0031308, y * 12.92, 1.055 * y.clamp(min=0) ** (1 / 2.4) - 0.055)


def rgb_to_lab(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB in [0, 1] (B, 3, H, W) -> Lab (B, 3, H, W) (D65 white) and relative luminance Y (B, 1, H, W)."""
    rgb = srgb_to_linear(x.clamp(0, 1))
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], device=x.device, dtype=x.dtype)
    white = torch.tensor([0.95047, 1.0, 1.08883], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,bjhw->bihw", m, rgb) / white  # (B, 3, H, W)
    eps = 216 / 24389
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    lab = torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)
    return lab, xyz[:, 1:2]


def ab_bins(ab: torch.Tensor, bin_size: float) -> torch.Tensor:
    """(B, 2, H, W) ab -> (B, H, W) long bin index a_bin * n + b_bin, n = ceil(2 * 110 / bin_size)."""
    n = math.ceil(2 * AB_RANGE / bin_size)
    idx = ((ab + AB_RANGE) / bin_size).floor().long().clamp(0, n - 1)  # (B, 2, H, W)
    return idx[:, 0] * n + idx[:, 1]


class ColourDecoder(nn.Module):
    """Per-pixel MLP: [h (D), L, y, x] -> bin logits; the concat's first linear layer is split in two."""

    def __init__(self, in_dim: int, hidden: int, bins: int) -> None:
        super().__init__()
        self.global_proj = nn.Linear(in_dim, hidden)
        self.local_proj = nn.Conv2d(3, hidden, 1)
        self.net = nn.Sequential(nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 1),
                                 nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, bins, 1))

    def forward(self, h: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
        """h (B, D), lightness (B, 1, s, s) scaled to about [-1, 1] -> logits (B, Q, s, s)."""
        b, _, s, _ = lightness.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, s, device=h.device), torch.linspace(-1, 1, s, device=h.device),
                                indexing="ij")
        coords = torch.stack([ys, xs]).to(lightness).expand(b, 2, s, s)  # (B, 2, s, s)
        u = self.local_proj(torch.cat([lightness, coords], dim=1)) + self.global_proj(h)[:, :, None, None]
        return self.net(u)  # (B, Q, s, s)


@dataclass(frozen=True)
class ColorizationConfig:
    """``bin_size``: side of the ab quantisation grid; ``target_size``: side of the predicted colour map."""

    bin_size: float = 20.0
    target_size: int = 16
    decoder_hidden_dim: int = 128
    views: ImageViewConfig = field(  # crop and flip only: colour jitter would corrupt the targets
        default_factory=lambda: ImageViewConfig(crop_scale=(0.5, 1.0), hflip_p=0.5, jitter_p=0.0, grayscale_p=0.0))

    def __post_init__(self) -> None:
        if not 1 <= self.bin_size <= 2 * AB_RANGE:
            raise ValueError(f"bin_size must be in [1, {2 * AB_RANGE:g}], got {self.bin_size}")
        if self.target_size < 1:
            raise ValueError(f"target_size must be >= 1, got {self.target_size}")
        v = self.views
        if v.jitter_p > 0 or v.grayscale_p > 0:
            raise ValueError(f"views.jitter_p and views.grayscale_p must be 0 (colour augmentation corrupts the "
                             f"colour targets), got {v.jitter_p} and {v.grayscale_p}")


@OBJECTIVES.register("colorization")
class Colorization(Objective):
    Config = ColorizationConfig

    def __init__(self, encoder: nn.Module, cfg: ColorizationConfig, data: DataSpec) -> None:
        self.check_data(data)
        super().__init__(encoder, cfg, data)
        self.bins = math.ceil(2 * AB_RANGE / cfg.bin_size) ** 2
        self.target_size = min(cfg.target_size, data.image_size)
        self.decoder = ColourDecoder(encoder.out_dim, cfg.decoder_hidden_dim, self.bins)

    @classmethod
    def check_data(cls, data: DataSpec) -> None:
        if data.channels != 3:
            s = "" if data.channels == 1 else "s"
            raise UserError(f"colorization needs colour (3-channel) images; dataset has {data.channels} channel{s}")

    def split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised RGB view (B, 3, S, S) -> grey encoder input (B, 3, S, S), L (B, 1, s, s), bins (B, s, s)."""
        mean, std = self.view_fn.mean.to(v.device).view(1, 3, 1, 1), self.view_fn.std.to(v.device).view(1, 3, 1, 1)
        with torch.autocast(v.device.type, enabled=False):  # colour maths in fp32 even under bf16 training
            lab, lum = rgb_to_lab(v.float() * std + mean)  # (B, 3, S, S), (B, 1, S, S)
            grey = (linear_to_srgb(lum).expand(-1, 3, -1, -1) - mean) / std  # same L, no colour
            small = F.adaptive_avg_pool2d(lab, self.target_size)  # (B, 3, s, s)
        return grey, small[:, :1] / 50 - 1, ab_bins(small[:, 1:], self.cfg.bin_size)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: two normalised RGB views (B, 3, S, S); both are colourised."""
        with torch.no_grad():
            grey, lightness, target = (torch.cat(t) for t in zip(*(self.split(v) for v in views)))
        h = self.encoder(grey)  # (2B, D)
        logits = self.decoder(h, lightness)  # (2B, Q, s, s)
        loss = F.cross_entropy(logits, target)
        acc = (logits.detach().argmax(dim=1) == target).float().mean()
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={"colorization_loss": loss.detach()}, embeddings=(h1, h2),
                          report={"pretext_acc": float(acc)})
