"""VICReg's three terms against slow, obvious references and their known properties."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.losses.vicreg import VICRegLoss, covariance_term, variance_term


def ref_variance(z: torch.Tensor, eps: float = 1e-4) -> float:
    n, d = z.shape
    out = 0.0
    for j in range(d):
        xs = [float(z[i, j]) for i in range(n)]
        m = sum(xs) / n
        out += max(0.0, 1 - math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) + eps))
    return out / d


def ref_covariance(z: torch.Tensor) -> float:
    n, d = z.shape
    means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
    out = 0.0
    for a in range(d):
        for b in range(d):
            if a != b:
                c = sum((float(z[i, a]) - means[a]) * (float(z[i, b]) - means[b]) for i in range(n)) / (n - 1)
                out += c * c
    return out / d


def test_terms_match_references_and_weights_combine_them() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = 0.5 * torch.randn(10, 4, generator=g), 0.5 * torch.randn(10, 4, generator=g)
    assert variance_term(z1).item() == pytest.approx(ref_variance(z1), rel=1e-5)
    assert covariance_term(z1).item() == pytest.approx(ref_covariance(z1), rel=1e-5)
    loss = VICRegLoss(sim_weight=2.0, var_weight=3.0, cov_weight=5.0)
    t = loss.terms(z1, z2)
    mse = float(((z1 - z2) ** 2).mean())
    assert t["invariance_loss"].item() == pytest.approx(mse, rel=1e-6)
    assert t["variance_loss"].item() == pytest.approx(0.5 * (ref_variance(z1) + ref_variance(z2)), rel=1e-5)
    assert t["covariance_loss"].item() == pytest.approx(ref_covariance(z1) + ref_covariance(z2), rel=1e-5)
    expected = 2.0 * mse + 3.0 * t["variance_loss"].item() + 5.0 * t["covariance_loss"].item()
    assert loss(z1, z2).item() == pytest.approx(expected, rel=1e-5)


def test_zero_for_identical_spread_decorrelated_views() -> None:
    white = 2.0 * torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])  # std > 1, orthogonal columns
    assert VICRegLoss()(white, white.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_collapse_is_what_the_variance_term_punishes() -> None:
    const = torch.ones(8, 6)
    t = VICRegLoss().terms(const, const.clone())
    assert t["invariance_loss"].item() == 0.0 and t["covariance_loss"].item() == 0.0
    assert t["variance_loss"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    # near collapse the hinge is active: one gradient step spreads the embeddings out
    z = (1 + 0.01 * torch.randn(8, 6, generator=torch.Generator().manual_seed(0))).requires_grad_()
    before = variance_term(z)
    before.backward()
    with torch.no_grad():
        after = variance_term(z - 1.0 * z.grad)
    assert float(z.grad.abs().sum()) > 0 and after.item() < before.item()
