"""Projection and prediction MLPs (SimCLR / MoCo v2 / BYOL heads)."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a final Linear (optionally BN without affine, as in SimSiam)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(d, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        d = hidden_dim
    layers.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
