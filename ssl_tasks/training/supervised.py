"""The supervised ceiling: the same encoder trained with all labels (cross entropy, same views)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.modalities.image.views import ImageViews


def train_supervised(
    encoder: nn.Module, images: np.ndarray, labels: np.ndarray, *, num_classes: int, views: ImageViews | None,
    epochs: int, lr: float, batch_size: int, seed: int, log: callable = print,
) -> nn.Module:
    """Train ``encoder`` + a linear head on uint8 (N, C, H, W) images through ``views``, or on int64 token rows
    (N, L) as they are (``views=None``: dropout is the text encoder's noise); return the encoder."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Linear(encoder.out_dim, num_classes)
    model = nn.Sequential(encoder, head)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels).long()
    n = len(x_all)
    bs = min(batch_size, n)
    steps = max(1, n // bs)
    total = steps * epochs
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        loss_sum = 0.0
        for s in range(steps):
            it = epoch * steps + s
            for grp in opt.param_groups:
                grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * it / total))
            idx = perm[s * bs : (s + 1) * bs]
            logits = model(views(x_all[idx], g) if views is not None else x_all[idx])
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
        log(f"[supervised] epoch {epoch + 1}/{epochs} loss={loss_sum / steps:.4f}")
    return encoder
