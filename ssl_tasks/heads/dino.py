"""DINO's projection head: MLP, L2-normalised bottleneck, weight-normalised linear to K prototypes.

Caron et al. "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """(N, D) features -> (N, K) prototype logits.

    The last layer is weight-normalised (Salimans & Kingma 2016, arXiv:1602.07868): each prototype
    is ``g_k * v_k / |v_k|``. With ``norm_last_layer`` (the paper's default) g is fixed to 1, so the
    logits are cosines between the bottleneck and the prototypes; otherwise g is learned (init 1).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, num_prototypes: int = 65536,
                 num_layers: int = 3, norm_last_layer: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(d, hidden_dim), nn.GELU()]
            d = hidden_dim
        layers.append(nn.Linear(d, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.prototypes = nn.Parameter(nn.Linear(bottleneck_dim, num_prototypes, bias=False).weight.data)  # (K, D')
        self.scale = None if norm_last_layer else nn.Parameter(torch.ones(num_prototypes, 1))  # (K, 1) the g of WN

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (N, D) -> (N, K) cosine (or weight-normalised) logits."""
        z = F.normalize(self.mlp(h), dim=-1)  # (N, D')
        w = F.normalize(self.prototypes, dim=1)  # (K, D')
        if self.scale is not None:
            w = w * self.scale
        return z @ w.T  # (N, K)

    def last_layer(self) -> list[nn.Parameter]:
        """The prototypes (and their scale): what DINO freezes early in training."""
        return [self.prototypes] + ([self.scale] if self.scale is not None else [])
