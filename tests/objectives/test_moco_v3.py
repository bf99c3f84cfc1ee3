"""MoCo v3: momentum targets move only through the EMA; it trains a ViT (and CNNs)."""

from __future__ import annotations

import pytest
import torch
from objective_cases import GREY, TINY_VIT

from ssl_tasks.core.config import build
from ssl_tasks.core.ema import update_momentum
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.moco_v3 import MoCoV3

SMALL = {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32}


def make(encoder: str = "vit", enc_kwargs: dict | None = None) -> MoCoV3:
    torch.manual_seed(0)
    cfg = build(OBJECTIVES.get("moco_v3").Config, SMALL, "moco_v3")
    return MoCoV3(build_encoder(encoder, 1, 8, **(enc_kwargs or TINY_VIT)), cfg, GREY)


def views(obj: MoCoV3, seed: int = 0) -> list[torch.Tensor]:
    x = torch.randint(0, 256, (8, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return obj.make_views(x, torch.Generator().manual_seed(seed))


def targets(obj: MoCoV3) -> list[torch.Tensor]:
    return [p for _, t in obj.momentum_pairs() for p in t.parameters()]


def test_targets_move_only_through_the_ema() -> None:
    obj = make()
    assert all(not p.requires_grad for p in targets(obj))
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5)
    before = [p.detach().clone() for p in targets(obj)]
    obj(views(obj)).loss.backward()
    assert all(p.grad is None for p in targets(obj))
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, targets(obj)))  # the optimizer leaves them alone
    m = obj.momentum(0.0)
    students = [p.detach().clone() for s, _ in obj.momentum_pairs() for p in s.parameters()]
    for s, t in obj.momentum_pairs():
        update_momentum(s, t, m)
    for old, new, stu in zip(before, targets(obj), students, strict=True):
        assert torch.allclose(new, m * old + (1 - m) * stu, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, targets(obj)))


@pytest.mark.parametrize("encoder,kw", [("vit", TINY_VIT), ("small_cnn", {"width": 8})])
def test_trains_the_encoder(encoder: str, kw: dict) -> None:
    obj = make(encoder, kw)
    res = obj(views(obj))
    assert torch.isfinite(res.loss) and set(res.terms) == {"info_nce_loss"}
    res.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in obj.encoder.parameters())
    assert all(p.grad is not None for p in obj.predictor.parameters())


def test_loss_is_the_symmetric_ctr_of_queries_and_momentum_keys() -> None:
    obj = make()
    obj.eval()  # fixed BN statistics, so separate calls reproduce the step's numbers
    v = views(obj)
    res = obj(v)
    with torch.no_grad():
        q1, q2 = (obj.predictor(obj.projector(obj.encoder(x))) for x in v)
        k1, k2 = (obj.momentum_projector(obj.momentum_encoder(x)) for x in v)
        ref = obj.criterion.contrastive(q1, k2) + obj.criterion.contrastive(q2, k1)
    assert res.loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_momentum_schedule() -> None:
    obj = make()
    assert obj.momentum(0.0) == pytest.approx(0.99)
    assert obj.momentum(0.5) == pytest.approx(0.995)
    assert obj.momentum(1.0) == pytest.approx(1.0)
