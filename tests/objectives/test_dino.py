"""DINO: the teacher sees global crops only, is the evaluation encoder, and follows the student by EMA."""

from __future__ import annotations

import pytest
import torch
from objective_cases import GREY, TINY_VIT

from ssl_tasks.core.config import build
from ssl_tasks.core.ema import update_momentum
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.dino import DINO

SMALL = {"num_prototypes": 32, "hidden_dim": 32, "bottleneck_dim": 16, "crops": {"local_crops": 3}}


def make(encoder: str = "small_cnn", enc_kwargs: dict | None = None, **kw: object) -> DINO:
    torch.manual_seed(0)
    cfg = build(OBJECTIVES.get("dino").Config, {**SMALL, **kw}, "dino")
    enc = build_encoder(encoder, 1, 8, **(enc_kwargs if enc_kwargs is not None else {"width": 8}))
    return DINO(enc, cfg, GREY)


def views(obj: DINO, seed: int = 0) -> list[torch.Tensor]:
    x = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return obj.make_views(x, torch.Generator().manual_seed(seed))


def input_sizes(module: torch.nn.Module) -> list[tuple[int, ...]]:
    seen: list[tuple[int, ...]] = []
    module.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    return seen


def test_teacher_receives_only_global_crops() -> None:
    obj = make()
    v = views(obj)
    assert [t.shape[-1] for t in v] == [8, 8, 4, 4, 4]  # global first, then local at half the side
    teacher, student = input_sizes(obj.teacher_encoder), input_sizes(obj.encoder)
    obj(v)
    assert teacher == [(12, 1, 8, 8)]  # the two global crops, batched
    assert student == [(12, 1, 8, 8), (18, 1, 4, 4)]  # all five crops, one pass per resolution


def test_eval_encoder_is_the_teacher_and_lags_the_student() -> None:
    obj = make()
    assert obj.eval_encoder is obj.teacher_encoder
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5)
    obj.progress = 0.5
    obj(views(obj)).loss.backward()
    opt.step()
    for s, t in obj.momentum_pairs():
        update_momentum(s, t, obj.momentum(0.0))
    pairs = zip(obj.encoder.parameters(), obj.eval_encoder.parameters())
    diff = [float((a.detach() - b).abs().max()) for a, b in pairs]
    assert max(diff) > 0  # teacher and student differ after a step ...
    assert all(not p.requires_grad for p in obj.eval_encoder.parameters())  # ... and only EMA moves the teacher


def test_embeddings_are_the_teachers_global_features() -> None:
    obj = make()
    v = views(obj)
    res = obj(v)
    with torch.no_grad():
        h = obj.teacher_encoder(torch.cat(v[:2]))
    assert torch.allclose(res.embeddings[0], h[:6]) and torch.allclose(res.embeddings[1], h[6:])


def test_runs_with_vit_and_local_crops_tile_into_patches() -> None:
    obj = make("vit", TINY_VIT)
    v = views(obj)
    assert v[-1].shape[-1] % TINY_VIT["patch_size"] == 0
    res = obj(v)
    res.loss.backward()
    assert torch.isfinite(res.loss)
    assert all(p.grad is not None for p in obj.encoder.parameters())


def test_last_layer_frozen_early_and_teacher_temperature_warms_up() -> None:
    obj = make(freeze_last_layer_fraction=0.1)
    obj.progress = 0.0
    res = obj(views(obj))
    res.loss.backward()
    assert obj.head.prototypes.grad is not None  # in the graph (DDP needs every parameter used) ...
    obj.after_backward()
    assert obj.head.prototypes.grad is None and res.report["teacher_temp"] == pytest.approx(0.04)  # ... then dropped
    obj.progress = 0.5
    res = obj(views(obj))
    res.loss.backward()
    obj.after_backward()
    assert obj.head.prototypes.grad is not None and res.report["teacher_temp"] == pytest.approx(0.07)


def test_momentum_schedule_and_bad_config() -> None:
    obj = make()
    assert obj.momentum(0.0) == pytest.approx(0.996) and obj.momentum(1.0) == pytest.approx(1.0)
    with pytest.raises(UserError, match="teacher_temp"):
        make(teacher_temp=0.0)
    with pytest.raises(UserError, match="unknown key"):
        make(crops={"local_crop": 2})
