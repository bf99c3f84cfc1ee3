"""Image encoders: a small CNN for tiny images and a CIFAR-style ResNet-18.

Every encoder maps normalised images (B, C, H, W) to pooled features (B, D), exposes
``out_dim`` and declares its ``capabilities`` (what objectives may ask of it).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.encoders import Encoder as _Encoder


class Encoder(_Encoder):
    """Base of the image encoders: normalised images (B, C, H, W) -> pooled features (B, out_dim)."""

    modality: ClassVar[str] = "image"


def _memory_format(module: nn.Module, channels_last: bool) -> torch.memory_format:
    """Store conv weights NHWC when ``channels_last``: oneDNN's CPU convolutions run faster on that layout
    (bench/RESULTS.md section 3); the math is unchanged, and ``forward`` converts its input to match."""
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be true or false, got {channels_last!r}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module.to(memory_format=fmt)
    return fmt


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@ENCODERS.register("small_cnn")
class SmallCNN(Encoder):
    """Three conv stages (two 3x3 conv-BN-ReLU each, max-pool between), then global average pool.

    Sized for 8x8 to 32x32 inputs; ``width`` sets the first stage's channels (x1, x2, x4 after).
    ``pool`` > 1 average-pools the last feature map to a ``pool`` x ``pool`` grid and flattens it, so the
    features keep coarse layout (where a garment's sleeves are), which global pooling throws away.
    ``channels_last`` (default) stores activations NHWC, the faster layout for CPU convolutions.
    """

    def __init__(self, in_channels: int, image_size: int, width: int = 32, pool: int = 1,
                 channels_last: bool = True) -> None:
        super().__init__()
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive int, got {pool!r}")
        w = width
        first_pool = nn.MaxPool2d(2) if image_size >= 16 else nn.Identity()
        self.features = nn.Sequential(
            _conv_bn(in_channels, w), _conv_bn(w, w), first_pool,
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
        )  # fmt: skip
        self.out_dim = 4 * w * pool * pool
        self._fmt = _memory_format(self, channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 4*width*pool**2)"""
        return self.features(x.contiguous(memory_format=self._fmt))


@ENCODERS.register("resnet18")
class CifarResNet18(Encoder):
    """torchvision ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), He et al. 2016."""

    def __init__(self, in_channels: int, image_size: int, width: int = 64, channels_last: bool = True) -> None:
        import torchvision  # imported here: ~1.5 s that no other encoder needs

        super().__init__()
        net = torchvision.models.resnet18(num_classes=10)
        if width != 64:
            raise ValueError("resnet18 supports width=64 only")
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512
        self._fmt = _memory_format(self, channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 512)"""
        return self.net(x.contiguous(memory_format=self._fmt))


def build_encoder(name: str, in_channels: int, image_size: int, **kwargs: object) -> Encoder:
    cls = ENCODERS.get(name)
    try:
        return cls(in_channels=in_channels, image_size=image_size, **kwargs)
    except (TypeError, ValueError) as e:
        from ssl_tasks.core.errors import UserError

        raise UserError(f"encoder {name!r}: {e}") from None
