"""SimCSE's loss against a slow per-sample reference and its known properties."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.losses.simcse import SimCSELoss


def reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """-1/B sum_i log( exp(cos(z1_i, z2_i)/t) / sum_j exp(cos(z1_i, z2_j)/t) ), one sample at a time."""
    total = 0.0
    for i in range(len(z1)):
        sims = [torch.dot(z1[i], z2[j]) / (z1[i].norm() * z2[j].norm()) / t for j in range(len(z2))]
        total = total - (sims[i] - torch.logsumexp(torch.stack(sims), 0))
    return total / len(z1)


def test_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 16, generator=g, dtype=torch.float64), torch.randn(12, 16, generator=g, dtype=torch.float64)
    for t in (0.05, 0.5):
        torch.testing.assert_close(SimCSELoss(t)(z1, z2), reference(z1, z2, t))


def test_properties() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 32, generator=g)
    loss = SimCSELoss(0.05)
    assert loss(z, 3 * z) == pytest.approx(loss(z, z).item(), abs=1e-6)  # cosine: scale-free
    same = torch.ones(8, 4)  # every sentence identical: chance level, log B
    assert loss(same, same).item() == pytest.approx(math.log(8), abs=1e-5)
    orth = torch.eye(8)  # views equal, sentences orthogonal: near zero at a low temperature
    assert loss(orth, orth).item() < 1e-6
    assert loss(orth, orth.roll(1, 0)).item() > 10  # every positive is the wrong column
    with pytest.raises(ValueError):
        SimCSELoss(0.0)
