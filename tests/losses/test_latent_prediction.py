"""I-JEPA's loss: mean squared (or smooth L1) distance to constant target features."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.losses.latent_prediction import LatentPredictionLoss


def test_matches_loop_reference_and_stops_gradient_to_target() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    flat_p, flat_t = p.detach().reshape(-1).tolist(), t.detach().reshape(-1).tolist()
    mse = sum((a - b) ** 2 for a, b in zip(flat_p, flat_t)) / len(flat_p)
    huber = sum(0.5 * (a - b) ** 2 if abs(a - b) < 1 else abs(a - b) - 0.5
                for a, b in zip(flat_p, flat_t)) / len(flat_p)
    out = LatentPredictionLoss("mse")(p, t)
    assert out.item() == pytest.approx(mse, rel=1e-5)
    assert LatentPredictionLoss("smooth_l1")(p, t).item() == pytest.approx(huber, rel=1e-5)
    out.backward()
    assert p.grad is not None and t.grad is None


def test_zero_at_the_target_and_unknown_kind_refused() -> None:
    t = torch.randn(4, 8)
    assert LatentPredictionLoss()(t.clone(), t).item() == 0.0
    with pytest.raises(ValueError, match="smooth_l1"):
        LatentPredictionLoss("l1")  # type: ignore[arg-type]
