"""I-JEPA: the target encoder moves by EMA only, the context encoder sees the context only,
the predictor is told where the targets are, and the paper's linear momentum schedule."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.core.config import build
from ssl_tasks.core.ema import update_momentum
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.objectives import DataSpec
from ssl_tasks.objectives.ijepa import IJEPA

TINY_VIT = {"patch_size": 2, "width": 32, "depth": 2, "heads": 2, "pool": "mean"}
DIGITS = DataSpec(channels=1, image_size=8, mean=(0.3,), std=(0.37,))


def make(seed: int = 0, **kwargs: object) -> IJEPA:
    torch.manual_seed(seed)
    cfg = build(IJEPA.Config, {"pred_width": 32, "pred_depth": 1, "pred_heads": 2, **kwargs}, "ijepa")
    return IJEPA(build_encoder("vit", 1, 8, **TINY_VIT), cfg, DIGITS)


def views(obj: IJEPA, seed: int = 0) -> list[torch.Tensor]:
    x = torch.randint(0, 256, (16, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return obj.make_views(x, torch.Generator().manual_seed(seed))


def test_views_are_a_context_and_target_blocks_that_do_not_overlap() -> None:
    obj = make()
    x, ctx, tgt = views(obj)
    assert x.shape == (16, 1, 8, 8) and ctx.ndim == 2 and tgt.shape[:2] == (16, 4)
    for i in range(16):
        assert not set(ctx[i].tolist()) & set(tgt[i].reshape(-1).tolist())


def test_target_encoder_moves_by_ema_only() -> None:
    obj = make()
    online, target = obj.momentum_pairs()[0]
    assert online is obj.encoder and target is obj.target_encoder and obj.eval_encoder is target
    assert all(not p.requires_grad for p in target.parameters())
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5)
    assert not {id(p) for p in target.parameters()} & {id(p) for g in opt.param_groups for p in g["params"]}
    t0 = [p.detach().clone() for p in target.parameters()]
    res = obj(views(obj))
    opt.zero_grad()
    res.loss.backward()
    assert all(p.grad is None for p in target.parameters())  # no gradient reaches it
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(t0, target.parameters()))  # the optimizer leaves it alone
    s = [p.detach().clone() for p in online.parameters()]
    m = obj.momentum(0.0)
    update_momentum(online, target, m)
    for a, b, pt in zip(t0, s, target.parameters()):
        assert torch.allclose(pt, m * a + (1 - m) * b, atol=1e-6)  # and the EMA moves it exactly so
    assert any(not torch.equal(a, b) for a, b in zip(t0, target.parameters()))


def test_momentum_rises_linearly_from_0996_to_1() -> None:
    obj = make()
    assert obj.momentum(0.0) == pytest.approx(0.996)
    assert obj.momentum(0.5) == pytest.approx(0.998)
    assert obj.momentum(1.0) == pytest.approx(1.0) and obj.momentum(2.0) == pytest.approx(1.0)


def test_context_encoder_sees_only_the_context() -> None:
    """Pixels outside the context change the targets but neither the context features nor the predictions."""
    obj = make()
    x, ctx, tgt = views(obj)
    inside = torch.zeros(16, 16, dtype=torch.bool).scatter_(1, ctx, True)  # (B, N)
    pix = inside.view(16, 1, 4, 1, 4, 1).expand(-1, -1, -1, 2, -1, 2).reshape(16, 1, 8, 8)
    y = torch.where(pix, x, torch.randn_like(x) * 5)
    with torch.no_grad():
        a, b = obj([x, ctx, tgt]), obj([y, ctx, tgt])
        pa = obj.predictor(obj.encoder.forward_tokens(x, ctx)[:, 1:], ctx, tgt, 4, 4)
        pb = obj.predictor(obj.encoder.forward_tokens(y, ctx)[:, 1:], ctx, tgt, 4, 4)
    assert torch.allclose(a.embeddings[0], b.embeddings[0], atol=1e-6) and torch.allclose(pa, pb, atol=1e-6)
    assert abs(a.loss.item() - b.loss.item()) > 1e-4  # the target encoder did see the change


def test_predictor_is_conditioned_on_target_positions() -> None:
    obj = make()
    x, ctx, tgt = views(obj)
    h = obj.encoder.forward_tokens(x, ctx)[:, 1:]
    with torch.no_grad():
        p = obj.predictor(h, ctx, tgt, 4, 4)
        moved = obj.predictor(h, ctx, tgt.flip(-1), 4, 4)  # same blocks, tokens asked in reverse order
        other = obj.predictor(h, ctx, (tgt + 1) % 16, 4, 4)  # elsewhere
    assert p.shape == (16, 4, tgt.shape[-1], 32)
    assert torch.allclose(moved.flip(2), p, atol=1e-5)  # each prediction follows its position
    assert not torch.allclose(other, p, atol=1e-3)


def test_targets_are_layer_normed_target_features() -> None:
    obj = make(loss="mse")
    x, ctx, tgt = views(obj)
    with torch.no_grad():
        res = obj([x, ctx, tgt])
        t = obj.target_encoder.forward_tokens(x)[:, 1:]
        s = (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        b, m, nt = tgt.shape
        s_tgt = s[torch.arange(b)[:, None, None], tgt]  # (B, M, N_tgt, D)
        p = obj.predictor(obj.encoder.forward_tokens(x, ctx)[:, 1:], ctx, tgt, 4, 4)
    assert res.loss.item() == pytest.approx((p - s_tgt).pow(2).mean().item(), rel=1e-4)
    assert set(res.terms) == {"prediction_loss"}


def test_config_rejects_bad_values_by_name() -> None:
    with pytest.raises(UserError, match="base_momentum"):
        build(IJEPA.Config, {"base_momentum": 1.5}, "ijepa")
    with pytest.raises(UserError, match="'mse', 'smooth_l1'"):
        build(IJEPA.Config, {"loss": "l3"}, "ijepa")
