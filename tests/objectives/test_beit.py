"""BEiT: targets come from the frozen tokenizer, the loss sees masked positions only, and it learns on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from objective_cases import GREY, TINY_VIT

from ssl_tasks.core.config import build
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.modalities.image.visual_tokenizer import PatchTokenizer
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.beit import BEiT
from ssl_tasks.training.config import TrainConfig
from ssl_tasks.training.loop import make_optimizer

SPEC = GREY


def make(tokenizer: Path, vit: dict | None = None, **kwargs: object) -> BEiT:
    torch.manual_seed(0)
    cfg = build(BEiT.Config, {"tokenizer": str(tokenizer), **kwargs}, "beit")
    return OBJECTIVES.get("beit")(build_encoder("vit", 1, 8, **(vit or TINY_VIT)), cfg, SPEC)


@pytest.fixture(scope="module")
def digits(digits_dataset: Path) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ImageDataset(digits_dataset)
    return torch.from_numpy(ds.load("train")[0]), torch.from_numpy(ds.load("test")[0])


def _record_criterion(obj: BEiT) -> list[tuple[torch.Tensor, ...]]:
    seen: list[tuple[torch.Tensor, ...]] = []
    obj.criterion.register_forward_hook(lambda _m, args, _out: seen.append(tuple(a.detach() for a in args)))
    return seen


def test_targets_come_from_the_frozen_tokenizer(beit_tokenizer: Path, digits: tuple) -> None:
    obj = make(beit_tokenizer)
    tok = obj.tokenizer
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    assert list(tok.parameters()) == [] and all(not b.requires_grad for b in tok.buffers())
    opt = make_optimizer(obj, TrainConfig(lr=0.05))
    in_opt = {id(p) for grp in opt.param_groups for p in grp["params"]}
    assert not any(id(b) in in_opt for b in tok.buffers())
    seen = _record_criterion(obj)
    reference = PatchTokenizer.load(beit_tokenizer)  # a fresh copy, straight from the file
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        x, mask, mask2 = obj.make_views(digits[0][i * 32:(i + 1) * 32], g)
        res = obj([x, mask, mask2])
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        _, targets, used_mask = seen[-1]
        pixels = x * 0.37 + 0.3  # undo the view's standardisation
        assert torch.equal(used_mask, mask)
        assert torch.equal(targets[mask], reference(pixels)[mask])
        assert all(b.grad is None for b in tok.buffers())
    for k, v in tok.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_loss_only_over_masked_positions(beit_tokenizer: Path, digits: tuple) -> None:
    obj = make(beit_tokenizer)
    views = obj.make_views(digits[0][:32], torch.Generator().manual_seed(0))
    mask = views[1]
    base = obj(views).loss
    hook = obj.head.register_forward_hook(lambda _m, _a, out: out + 50 * torch.randn_like(out) * (~mask)[..., None])
    assert torch.equal(obj(views).loss, base)
    hook.remove()
    obj.head.register_forward_hook(lambda _m, _a, out: out + 50 * torch.randn_like(out) * mask[..., None])
    assert not torch.equal(obj(views).loss, base)  # the masked positions are what counts


def _masked_accuracy(obj: BEiT, x: torch.Tensor) -> tuple[float, float]:
    """(accuracy, majority-code baseline) on masked positions of fixed masks."""
    obj.eval()
    with torch.no_grad():
        v, mask, _ = obj.make_views(x, torch.Generator().manual_seed(123))
        target = obj.targets(v)
        pred = obj.head(obj.encode_masked(v, mask)[:, 1:]).argmax(dim=-1)
        majority = torch.bincount(target[mask]).max().item() / int(mask.sum())
    obj.train()
    return float((pred == target)[mask].float().mean()), majority


def test_masked_token_accuracy_rises_above_chance_on_digits(beit_tokenizer: Path, digits: tuple) -> None:
    obj = make(beit_tokenizer, views={"crop_scale": [0.6, 1.0], "jitter_p": 0.0})
    opt = make_optimizer(obj, TrainConfig(lr=3e-3))
    g = torch.Generator().manual_seed(0)
    start, majority = _masked_accuracy(obj, digits[1])
    for _ in range(60):
        res = obj(obj.make_views(digits[0][torch.randint(0, len(digits[0]), (64,), generator=g)], g))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    assert 0 <= res.report["pretext_acc"] <= 1
    acc, _ = _masked_accuracy(obj, digits[1])
    assert acc > majority + 0.03 and acc > start + 0.1, (start, acc, majority)


def test_tokenizer_is_required_and_must_match_the_encoder(beit_tokenizer: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tokenizer is required"):
        build(BEiT.Config, {}, "runs.beit.objective_kwargs")
    with pytest.raises(UserError, match="does not exist"):
        make(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="patch_size=4"):
        make(beit_tokenizer, vit={**TINY_VIT, "patch_size": 4})
