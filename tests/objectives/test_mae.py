"""MAE: token encoders only, the encoder sees visible patches only, and it learns on real digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from objective_cases import TINY_VIT

from ssl_tasks.core.config import build
from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.objectives import OBJECTIVES, DataSpec
from ssl_tasks.objectives.base import check_compatible
from ssl_tasks.objectives.mae import MAE
from ssl_tasks.pipeline.params import parse_params

DIGITS = DataSpec(channels=1, image_size=8, mean=(0.3,), std=(0.37,))


def make(seed: int = 0, **kwargs: object) -> MAE:
    torch.manual_seed(seed)
    cfg = build(MAE.Config, {"decoder_width": 32, "decoder_depth": 1, "decoder_heads": 2, **kwargs}, "mae")
    return MAE(build_encoder("vit", 1, 8, **TINY_VIT), cfg, DIGITS)


def images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("name", ["mae", "ijepa"])
def test_refuses_an_encoder_without_tokens(name: str) -> None:
    with pytest.raises(UserError, match=r"lacks \['tokens'\]"):
        check_compatible(OBJECTIVES.get(name), ENCODERS.get("small_cnn"), "image")
    raw = {"datasets": {"digits": {"source": "sklearn_digits"}},
           "runs": {"r": {"dataset": "digits", "objective": name, "encoder": "small_cnn"}}}
    with pytest.raises(UserError, match=r"SmallCNN lacks \['tokens'\]"):
        parse_params(raw)
    raw["runs"]["r"]["encoder"] = "vit"
    parse_params(raw)  # the ViT has them


def test_views_carry_a_75_percent_mask_and_a_second_one_for_the_monitors() -> None:
    obj = make()
    x, keep, mask, keep2 = obj.make_views(images(), torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 8, 8) and keep.shape == keep2.shape == (16, 4) and mask.shape == (16, 16)
    assert (mask.sum(1) == 12).all() and not mask.gather(1, keep).any()
    assert not torch.equal(keep, keep2)


def test_encoder_sees_visible_patches_only_and_loss_reads_masked_ones() -> None:
    obj = make()
    x, keep, mask, keep2 = obj.make_views(images(), torch.Generator().manual_seed(0))
    res = obj([x, keep, mask, keep2])
    pix = mask.view(16, 1, 4, 1, 4, 1).expand(-1, -1, -1, 2, -1, 2).reshape(16, 1, 8, 8)  # masked pixels
    y = torch.where(pix, torch.randn_like(x) * 5, x)  # new pixels under every masked patch
    res2 = obj([y, keep, mask, keep2])
    assert torch.allclose(res.embeddings[0], res2.embeddings[0], atol=1e-6)  # encoder output unchanged
    assert abs(res.loss.item() - res2.loss.item()) > 1e-3  # the targets changed


def test_loss_is_reconstruction_of_the_masked_patches() -> None:
    obj = make(norm_pix=False)
    views = obj.make_views(images(), torch.Generator().manual_seed(0))
    res = obj(views)
    assert set(res.terms) == {"reconstruction_loss"} and res.embeddings[0].shape == (16, 32)
    assert obj.momentum_pairs() == [] and obj.eval_encoder is obj.encoder


def test_a_few_steps_reduce_the_loss_on_real_digits(digits_dataset: Path) -> None:
    x_all, _ = ImageDataset(digits_dataset).load("train")
    x_all = torch.from_numpy(x_all)
    obj = make()
    held = obj.make_views(x_all[:256], torch.Generator().manual_seed(123))  # fixed views and masks

    def held_loss() -> float:
        with torch.no_grad():
            return obj(held).loss.item()

    before = held_loss()
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for i in range(15):
        xb = x_all[(i * 64) % 1024:(i * 64) % 1024 + 64]
        loss = obj(obj.make_views(xb, g)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_loss() < 0.85 * before


def test_monitor_only_pass_is_skipped_once_the_loop_has_its_samples() -> None:
    """The second mask's encoder pass exists only for the collapse monitors."""
    from ssl_tasks.core.config import build
    from ssl_tasks.modalities.image.encoders import build_encoder
    from ssl_tasks.objectives import OBJECTIVES

    cls = OBJECTIVES.get("mae")
    obj = cls(build_encoder("vit", 1, 8, **TINY_VIT), build(cls.Config, {}, "mae"), DIGITS)
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    views = obj.make_views(x, torch.Generator().manual_seed(0))
    assert obj(views).embeddings is not None
    obj.monitoring = False
    res = obj(views)
    assert res.embeddings is None and torch.isfinite(res.loss)
