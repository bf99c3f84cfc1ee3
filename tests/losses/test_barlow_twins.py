"""Barlow Twins loss against a slow, element-by-element reference and its known properties."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.losses.barlow_twins import BarlowTwinsLoss

# Four samples, three dimensions: every column has mean 0, variance 1, and the columns are orthogonal.
WHITE = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])


def reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5) -> float:
    n, d = z1.shape

    def col(z: torch.Tensor, j: int) -> list[float]:
        xs = [float(z[i, j]) for i in range(n)]
        m = sum(xs) / n
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / n + eps)
        return [(x - m) / sd for x in xs]

    a = [col(z1, j) for j in range(d)]
    b = [col(z2, j) for j in range(d)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else lambd * c**2
    return total


def test_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    for lambd in (0.0, 5e-3, 0.5):
        assert BarlowTwinsLoss(lambd)(z1, z2).item() == pytest.approx(reference(z1, z2, lambd), rel=1e-5)


def test_zero_for_identical_decorrelated_views_and_invariant_to_affine_rescaling() -> None:
    loss = BarlowTwinsLoss(lambd=1.0)
    assert loss(WHITE, WHITE.clone()).item() == pytest.approx(0.0, abs=1e-4)
    scaled = WHITE * torch.tensor([3.0, 0.5, 7.0]) + torch.tensor([1.0, -2.0, 4.0])  # per-dimension affine
    assert loss(scaled, WHITE).item() == pytest.approx(0.0, abs=1e-4)


def test_penalises_redundant_dimensions_only_through_lambda() -> None:
    redundant = WHITE.clone()
    redundant[:, 1] = redundant[:, 0]  # two dimensions carry the same signal: off-diagonal C_01 = 1
    assert BarlowTwinsLoss(lambd=0.0)(redundant, redundant).item() == pytest.approx(0.0, abs=1e-4)
    assert BarlowTwinsLoss(lambd=1.0)(redundant, redundant).item() == pytest.approx(2.0, abs=1e-3)


def test_refuses_a_single_sample_and_negative_lambda() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        BarlowTwinsLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="lambd"):
        BarlowTwinsLoss(lambd=-1.0)
