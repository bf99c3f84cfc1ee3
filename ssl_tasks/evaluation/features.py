"""Frozen features for the evaluation protocols: an encoder's pooled output, or the raw input.

Inputs are uint8 images (N, C, H, W) or clips (N, T, C, H, W), normalised here with the data statistics, int64
token rows (N, L) of a text dataset, or float32 arrays (N, ...) of any other modality; tokens and floats are fed as
they are. The raw-input baseline is the pixels for images and clips, a bag of words (of subword tokens) for text
and the flattened values for floats.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.views import normalize


def _check_images(images: np.ndarray) -> None:
    is_images = images.ndim in (4, 5) and images.dtype == np.uint8  # images (N, C, H, W) or clips (N, T, C, H, W)
    is_tokens = images.ndim == 2 and images.dtype == np.int64
    is_floats = images.ndim >= 2 and images.dtype == np.float32
    if not (is_images or is_tokens or is_floats):
        raise UserError(f"inputs must be uint8 images (N, C, H, W) or clips (N, T, C, H, W), int64 token rows (N, L) "
                        f"or float32 (N, ...), "
                        f"got {images.dtype} {images.shape}")


def prepare(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A batch as the encoder takes it: images normalised, token ids unchanged."""
    return normalize(x, mean, std) if x.dtype == torch.uint8 else x


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
    """uint8 (N, C, H, W) images or int64 (N, L) tokens -> float32 (N, D) on CPU, encoded in eval mode, no grad.

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
    order = np.arange(len(images))
    if images.dtype == np.int64:  # token rows: batch by length and trim the padding (pad id 0), ~4x less work
        order = np.argsort((images != 0).sum(1), kind="stable")
    net.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                xb = np.ascontiguousarray(images[order[s : s + batch_size]])
                if xb.dtype == np.int64:
                    xb = xb[:, : max(1, int((xb != 0).sum(1).max()))]
                x = torch.from_numpy(xb).to(device)  # (B, C, H, W) or (B, L')
                out.append(net(prepare(x, mean_t, std_t)).float().cpu())  # (B, D)
    finally:
        encoder.train(was_training)
    if not out:
        return torch.empty(0, int(getattr(encoder, "out_dim", 0)))
    feats = torch.cat(out)  # (N, D) in ``order``
    result = torch.empty_like(feats)
    result[torch.from_numpy(order)] = feats
    return result


def raw_features(images: np.ndarray, vocab_size: int | None = None) -> torch.Tensor:
    """The raw-input baseline's features.

    Images: uint8 (N, C, H, W) -> float32 (N, C*H*W) pixels in [0, 1]. Tokens: int64 (N, L) -> (N, V) bag of
    words, log(1 + count) per token id, rows L2-normalised, id 0 ([PAD]) dropped; pass the same
    ``vocab_size`` for every split (:func:`raw_pair` does).
    """
    _check_images(images)
    if images.dtype == np.int64:
        v = int(images.max(initial=0)) + 1 if vocab_size is None else vocab_size
        ids = torch.from_numpy(np.ascontiguousarray(images))
        counts = torch.zeros(len(ids), v).scatter_add_(1, ids, torch.ones(ids.shape))
        counts[:, 0] = 0
        return torch.nn.functional.normalize(counts.log1p_(), dim=1)
    x = torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype == np.float32:
        return x.reshape(len(images), -1).clone()  # (N, prod(...))
    return x.reshape(len(images), -1).float().div_(255)  # (N, C*H*W)


def raw_pair(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw features of two splits in one feature space."""
    v = None
    if train.dtype == np.int64:
        v = int(max(train.max(initial=0), test.max(initial=0))) + 1
    return raw_features(train, v), raw_features(test, v)
