"""Frozen features for the evaluation protocols: an encoder's pooled output, or raw pixels."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.views import normalize


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.dtype != np.uint8:
        raise UserError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")


def _on_device(module: nn.Module, device: torch.device) -> bool:
    """True if the module's parameters live on ``device`` ("cuda" matches any "cuda:i")."""
    p = next(module.parameters(), None)
    if p is None:
        return True
    return p.device.type == device.type and (device.index is None or p.device.index == device.index)


def extract_features(
    encoder: nn.Module,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, D) on CPU: normalised, encoded in eval mode, no grad.

    The encoder's train/eval mode is restored afterwards. An encoder living on another
    device than ``device`` is evaluated through a moved copy, so the caller's is untouched.
    """
    _check_images(images)
    device = torch.device(device)
    was_training = encoder.training
    net = encoder if _on_device(encoder, device) else copy.deepcopy(encoder).to(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    out: list[torch.Tensor] = []
    net.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)  # (B, C, H, W)
                out.append(net(normalize(x, mean_t, std_t)).float().cpu())  # (B, D)
    finally:
        encoder.train(was_training)
    if not out:
        return torch.empty(0, int(getattr(encoder, "out_dim", 0)))
    return torch.cat(out)  # (N, D)


def raw_features(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C*H*W) pixels in [0, 1]: the raw-input baseline."""
    _check_images(images)
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x.reshape(len(images), -1).float().div_(255)  # (N, C*H*W)
