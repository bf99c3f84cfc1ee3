"""Batched, on-device image views (SimCLR-style augmentation, Chen et al. 2020, arXiv:2002.05709).

All randomness is drawn per sample from one ``torch.Generator`` in a few tensor ops, so a
batch of B views costs a handful of kernels on whichever device trains, not B Python calls.
Random resized crop and flip are one ``affine_grid``/``grid_sample``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageViewConfig:
    """Augmentation strengths; ``colour`` terms apply only to 3-channel data."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")

    def short(self) -> str:
        """The views in a few words for progress lines: ``crop 0.6-1, flip 0.5`` (probabilities that are 0 left out)."""
        lo, hi = self.crop_scale
        parts = [f"crop {lo:g}-{hi:g}"]
        parts += [f"{word} {p:g}" for word, p in (("flip", self.hflip_p), ("jitter", self.jitter_p),
                                                  ("grey", self.grayscale_p), ("blur", self.blur_p)) if p]
        return ", ".join(parts)


def _rand(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (B, C, H, W) (or clips (B, T, C, H, W): channels stay third from last) -> standardised
    float."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def random_resized_crop(
    x: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], hflip_p: float, g: torch.Generator
) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, size, size): crop area ~ U(scale), log-aspect ~ U(log ratio), flip."""
    b = x.shape[0]
    area = _rand(g, b, *scale)
    log_r = _rand(g, b, math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)  # (B,) fraction of width
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (torch.rand(b, generator=g, device=g.device) * 2 - 1) * (1 - w)  # centre in [-1, 1] coords
    cy = (torch.rand(b, generator=g, device=g.device) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=g, device=g.device) < hflip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)  # (B, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, cfg: ImageViewConfig, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast (and saturation, random grayscale on colour) per sample; x in [0, 1]."""
    b, c = x.shape[:2]
    apply = (torch.rand(b, generator=g, device=g.device) < cfg.jitter_p).view(b, 1, 1, 1)
    bright = _rand(g, b, 1 - cfg.brightness, 1 + cfg.brightness).view(b, 1, 1, 1)
    contr = _rand(g, b, 1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1)
    y = x * bright
    grey = _luma(y) if c == 3 else y
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    y = (y - mean) * contr + mean
    if c == 3:
        sat = _rand(g, b, 1 - cfg.saturation, 1 + cfg.saturation).view(b, 1, 1, 1)
        lum = _luma(y)
        y = (y - lum) * sat + lum
    y = torch.where(apply, y, x)
    if c == 3 and cfg.grayscale_p > 0:
        to_grey = (torch.rand(b, generator=g, device=g.device) < cfg.grayscale_p).view(b, 1, 1, 1)
        y = torch.where(to_grey, _luma(y).expand_as(y), y)
    return y.clamp(0, 1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W), ITU-R 601 weights."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, p: float, sigma: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Per-sample sigma, separable kernel of ~10% of the image side (odd, >= 3); applied with prob p."""
    b, c, hgt, wid = x.shape
    k = max(3, int(0.1 * min(hgt, wid)) // 2 * 2 + 1)
    s = _rand(g, b, *sigma).view(b, 1)  # (B, 1)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2  # (k,)
    kern = torch.exp(-(t.view(1, -1) ** 2) / (2 * s**2))
    kern = kern / kern.sum(dim=1, keepdim=True)  # (B, k)
    kern = kern.repeat_interleave(c, dim=0)  # (B*C, k)
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kern.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kern.view(b * c, 1, k, 1), groups=b * c)
    apply = (torch.rand(b, generator=g, device=g.device) < p).view(b, 1, 1, 1)
    return torch.where(apply, y.view(b, c, hgt, wid), x)


class ImageViews:
    """Callable that turns a uint8 batch (B, C, H, W) into one normalised augmented view."""

    def __init__(self, cfg: ImageViewConfig, mean: torch.Tensor, std: torch.Tensor, size: int) -> None:
        self.cfg, self.mean, self.std, self.size = cfg, mean, std, size

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        y = random_resized_crop(x, self.size, cfg.crop_scale, cfg.crop_ratio, cfg.hflip_p, g)
        if cfg.jitter_p > 0 or (x.shape[1] == 3 and cfg.grayscale_p > 0):
            y = colour_jitter(y, cfg, g)
        if cfg.blur_p > 0:
            y = gaussian_blur(y, cfg.blur_p, cfg.blur_sigma, g)
        return normalize(y, self.mean.to(y.device), self.std.to(y.device))
