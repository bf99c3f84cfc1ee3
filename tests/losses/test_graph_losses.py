"""DGI's discriminator BCE and GraphMAE's scaled cosine error against slow, obvious references."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.losses.dgi import BilinearDiscriminator, DGILoss, dgi_summary
from ssl_tasks.losses.scaled_cosine import ScaledCosineError


def ref_dgi(h: torch.Tensor, hc: torch.Tensor, w: torch.Tensor, b: float) -> float:
    n, d = h.shape
    s = [1 / (1 + math.exp(-sum(float(h[i, j]) for i in range(n)) / n)) for j in range(d)]

    def score(row: torch.Tensor) -> float:
        return sum(float(row[a]) * float(w[a, c]) * s[c] for a in range(d) for c in range(d)) + b

    def log_sig(z: float) -> float:
        return -math.log1p(math.exp(-z))

    total = sum(-log_sig(score(h[i])) for i in range(n)) + sum(-log_sig(-score(hc[i])) for i in range(n))
    return total / (2 * n)


def test_dgi_loss_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    h, hc = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    disc = BilinearDiscriminator(4)
    with torch.no_grad():
        disc.bilinear.bias.fill_(0.3)
    s = dgi_summary(h)
    loss = DGILoss()(disc(h, s), disc(hc, s))
    assert loss.item() == pytest.approx(ref_dgi(h, hc, disc.bilinear.weight[0].detach(), 0.3), rel=1e-5)


def test_dgi_loss_is_low_when_discriminator_separates_and_log2_at_chance() -> None:
    zero = torch.zeros(5)
    assert DGILoss()(zero, zero).item() == pytest.approx(math.log(2), rel=1e-6)
    assert DGILoss()(torch.full((5,), 20.0), torch.full((5,), -20.0)).item() < 1e-6


def ref_sce(x: torch.Tensor, z: torch.Tensor, alpha: float) -> float:
    out = 0.0
    for i in range(len(x)):
        dot = sum(float(x[i, j]) * float(z[i, j]) for j in range(x.shape[1]))
        nx = math.sqrt(sum(float(v) ** 2 for v in x[i]))
        nz = math.sqrt(sum(float(v) ** 2 for v in z[i]))
        out += (1 - dot / (nx * nz)) ** alpha
    return out / len(x)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_scaled_cosine_error_matches_reference(alpha: float) -> None:
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert ScaledCosineError(alpha)(z, x).item() == pytest.approx(ref_sce(x, z, alpha), rel=1e-5)


def test_scaled_cosine_error_is_scale_invariant_and_zero_on_a_match() -> None:
    x = torch.randn(4, 3)
    sce = ScaledCosineError(3.0)
    assert sce(3.0 * x, x).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        ScaledCosineError(0.5)


def test_discriminator_equals_torch_bilinear() -> None:
    g = torch.Generator().manual_seed(2)
    h, s = torch.randn(5, 3, generator=g), torch.randn(3, generator=g)
    disc = BilinearDiscriminator(3)
    torch.testing.assert_close(disc(h, s), disc.bilinear(h, s.expand_as(h)).squeeze(-1))
