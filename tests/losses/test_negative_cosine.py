"""BYOL's loss: 2 - 2 cos(p, z)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_tasks.losses.negative_cosine import NegativeCosineLoss


def test_zero_for_identical_normalised_inputs() -> None:
    p = F.normalize(torch.randn(5, 8), dim=1)
    assert NegativeCosineLoss()(p, p.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_scale_invariant_and_four_for_opposite() -> None:
    p = torch.randn(5, 8)
    loss = NegativeCosineLoss()
    assert loss(p, 3.0 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)


def test_matches_reference_and_stops_gradient_to_target() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 4, generator=g, requires_grad=True), torch.randn(6, 4, generator=g, requires_grad=True)
    pd, zd = p.detach(), z.detach()
    ref = sum(2 - 2 * float(pd[i] @ zd[i]) / float(pd[i].norm() * zd[i].norm()) for i in range(6)) / 6
    out = NegativeCosineLoss()(p, z)
    assert out.item() == pytest.approx(ref, rel=1e-5)
    out.backward()
    assert p.grad is not None and z.grad is None


def test_without_stop_gradient_the_target_gets_a_gradient_too() -> None:
    """SimSiam's collapsing ablation: the flag really removes the stop-gradient."""
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    NegativeCosineLoss(stop_gradient=False)(p, z).backward()
    assert p.grad is not None and z.grad is not None and float(z.grad.abs().sum()) > 0
