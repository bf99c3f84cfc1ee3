"""The video model: tube masking, tubelet (un)patchify, the ``video_vit`` encoder and VideoMAE end to end."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.video.encoders import VideoViT, sincos_3d
from ssl_tasks.modalities.video.masking import tube_masking, tubelet_patchify, tubelet_unpatchify
from ssl_tasks.modalities.video.spec import VideoDataSpec
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.videomae import VideoMAE, VideoMAEConfig

TINY = {"tubelet": 2, "patch_size": 4, "width": 24, "depth": 1, "heads": 2}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_encoder(seed: int = 0, channels: int = 1, frames: int = 4, size: int = 8, **kw: object) -> VideoViT:
    torch.manual_seed(seed)
    return VideoViT(in_channels=channels, frames=frames, image_size=size, **{**TINY, **kw})


# --- tube masking ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("gt", "gh", "gw", "ratio", "s_keep"), [
    (8, 4, 4, 0.9, 2), (8, 4, 4, 0.75, 4), (2, 2, 2, 0.9, 1), (3, 5, 2, 0.5, 5), (4, 3, 3, 0.0, 9),
    (1, 10, 10, 0.29, 71),  # 0.29 * 100 is 28.999... in floating point: still 29 masked
])
def test_tube_masking_ratio_is_exact_and_keep_matches_mask(gt: int, gh: int, gw: int, ratio: float,
                                                           s_keep: int) -> None:
    keep, mask = tube_masking(16, gt, gh, gw, ratio, gen())
    n = gt * gh * gw
    assert keep.shape == (16, gt * s_keep) and keep.dtype == torch.long
    assert mask.shape == (16, n) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) == n - gt * s_keep).all()
    assert not mask.gather(1, keep).any()  # kept tubelets are exactly the unmasked ones
    assert (keep.diff(dim=1) > 0).all()  # ascending, no repeats
    assert torch.equal(torch.ones_like(mask).scatter_(1, keep, False), mask)


def test_tube_masking_repeats_one_spatial_mask_at_every_time_step() -> None:
    keep, mask = tube_masking(32, 5, 3, 4, 0.75, gen(1))
    per_t = mask.view(32, 5, 12)  # (B, gt, S): t-major order
    assert (per_t == per_t[:, :1]).all()
    assert len({tuple(r) for r in per_t[:, 0].tolist()}) > 16  # but a different mask per clip


def test_tube_masking_repeats_per_seed_and_differs_across_seeds() -> None:
    k1, m1 = tube_masking(8, 4, 4, 4, 0.9, gen(3))
    k2, m2 = tube_masking(8, 4, 4, 4, 0.9, gen(3))
    assert torch.equal(k1, k2) and torch.equal(m1, m2)
    assert not torch.equal(tube_masking(8, 4, 4, 4, 0.9, gen(4))[1], m1)
    freq = tube_masking(4000, 1, 4, 4, 0.75, gen(0))[1].float().mean(0)  # every position masked ~75% of the time
    assert torch.allclose(freq, torch.full((16,), 0.75), atol=0.04)


@pytest.mark.parametrize("ratio", [0.99, 0.9, 1 - 1e-12])
def test_tube_masking_always_leaves_a_visible_position(ratio: float) -> None:
    keep, mask = tube_masking(4, 3, 2, 2, ratio, gen())
    assert keep.shape == (4, 3) and (~mask).view(4, 3, 4).sum(-1).eq(1).all()


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_tube_masking_refuses_bad_ratios(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        tube_masking(2, 2, 2, 2, ratio, gen())


# --- tubelet patchify -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "tubelet", "p"), [((2, 4, 1, 8, 8), 2, 4), ((3, 6, 3, 8, 12), 3, 4),
                                                      ((1, 2, 2, 6, 6), 1, 3)])
def test_patchify_round_trip_and_layout(shape: tuple[int, ...], tubelet: int, p: int) -> None:
    x = torch.randn(*shape, generator=gen())
    b, t, c, h, w = shape
    gt, gh, gw = t // tubelet, h // p, w // p
    tok = tubelet_patchify(x, tubelet, p)
    assert tok.shape == (b, gt * gh * gw, tubelet * p * p * c)
    assert torch.equal(tubelet_unpatchify(tok, tubelet, p, gt, gh, gw), x)
    for i_t, i_h, i_w in [(0, 0, 0), (gt - 1, gh - 1, gw - 1), (gt // 2, gh - 1, 0)]:  # t-major, then row-major
        cube = x[1 % b, i_t * tubelet:(i_t + 1) * tubelet, :, i_h * p:(i_h + 1) * p, i_w * p:(i_w + 1) * p]
        assert torch.equal(tok[1 % b, (i_t * gh + i_h) * gw + i_w], cube.permute(0, 2, 3, 1).reshape(-1))


def test_patchify_refuses_shapes_that_do_not_split() -> None:
    with pytest.raises(ValueError, match="multiple"):
        tubelet_patchify(torch.zeros(1, 3, 1, 8, 8), 2, 4)
    with pytest.raises(ValueError, match="unpatchify"):
        tubelet_unpatchify(torch.zeros(1, 7, 32), 2, 4, 2, 2, 2)


# --- the encoder ----------------------------------------------------------------------------------------------------

def test_video_vit_is_registered_for_video_with_tokens() -> None:
    cls = ENCODERS.get("video_vit")
    assert cls is VideoViT and cls.modality == "video" and {"pooled", "tokens"} <= cls.capabilities


def test_default_encoder_shapes() -> None:
    enc = VideoViT(in_channels=1, frames=16, image_size=32)
    x = torch.randn(2, 16, 1, 32, 32)
    assert enc.grid(x) == (8, 4, 4) and enc.num_patches == 128
    assert enc.patch_tokens(x).shape == (2, 128, 128)
    assert enc.forward_tokens(x).shape == (2, 129, 128)
    assert enc(x).shape == (2, enc.out_dim) == (2, 128)


def test_tubelet_embedding_is_the_conv3d() -> None:
    """The matrix-product embedding equals the Conv3d it holds the weights of, in t-major, row-major order."""
    enc = tiny_encoder(channels=3, frames=6, size=12)
    x = torch.randn(2, 6, 3, 12, 12, generator=gen())
    conv = enc.embed(x.transpose(1, 2)).flatten(2).transpose(1, 2)  # (B, gt*gh*gw, D)
    assert torch.allclose(enc.patch_tokens(x), conv, atol=1e-5)


def test_a_frame_change_only_moves_its_tubelet_tokens() -> None:
    enc = tiny_encoder(frames=8, size=8)  # grid (4, 2, 2)
    x = torch.randn(1, 8, 1, 8, 8, generator=gen())
    base = enc.patch_tokens(x)
    for frame in (0, 5, 7):
        y = x.clone()
        y[:, frame] += 1.0
        changed = (enc.patch_tokens(y) - base).abs().amax(-1)[0] > 1e-6  # (N,)
        expect = torch.zeros(4, 2, 2, dtype=torch.bool)
        expect[frame // 2] = True
        assert torch.equal(changed, expect.reshape(-1))
    y = x.clone()
    y[:, 2:4, :, 4:, :4] += 1.0  # frames 2-3, bottom-left quarter: tubelet (1, 1, 0)
    changed = (enc.patch_tokens(y) - base).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [(1 * 2 + 1) * 2 + 0]


def test_keep_subset_equals_gathering_the_positioned_tokens() -> None:
    enc = tiny_encoder().eval()
    x = torch.randn(3, 4, 1, 8, 8, generator=gen())
    keep, _ = tube_masking(3, 2, 2, 2, 0.5, gen(1))  # (3, 4)
    t = enc.patch_tokens(x) + enc.pos_embed(2, 2, 2)  # (B, N, D)
    gathered = torch.stack([t[i, keep[i]] for i in range(3)])
    with torch.no_grad():
        assert torch.allclose(enc.forward_tokens(x, keep), enc.encode(gathered), atol=1e-5)
        assert torch.allclose(enc.forward_tokens(x, torch.arange(8).expand(3, 8)), enc.forward_tokens(x), atol=1e-5)


def test_positions_are_distinct_and_fixed() -> None:
    pe = sincos_3d(8, 4, 4, 128)
    assert pe.shape == (128, 128) and not pe.requires_grad
    assert torch.cdist(pe, pe).add(torch.eye(128) * 1e3).min() > 0.1  # no two tubelets share a position
    grid = pe.view(8, 4, 4, 128)  # channels: t 0-43, h 44-85, w 86-127
    assert torch.equal(grid[..., 86:], grid[:1, :1, :, 86:].expand(8, 4, -1, -1))  # the w part depends on w only
    assert torch.equal(grid[..., :44], grid[:, :1, :1, :44].expand(-1, 4, 4, -1))  # the t part on t only
    assert sum(p.numel() for n, p in tiny_encoder().named_parameters() if "pos" in n) == 0
    with pytest.raises(ValueError, match="width"):
        sincos_3d(1, 1, 1, 9)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_pooling_and_gradients_reach_every_parameter(pool: str) -> None:
    enc = tiny_encoder(pool=pool)
    x = torch.randn(2, 4, 1, 8, 8, generator=gen())
    z = enc.forward_tokens(x)
    assert torch.allclose(enc(x), z[:, 1:].mean(1) if pool == "mean" else z[:, 0], atol=1e-6)
    enc(x).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize(("kwargs", "match"), [({"frames": 5}, "tubelet"), ({"size": 10}, "patch_size"),
                                               ({"heads": 5}, "heads"), ({"pool": "max"}, "pool")])
def test_encoder_refuses_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_encoder(**kwargs)


def test_encoder_refuses_clips_that_do_not_split() -> None:
    with pytest.raises(ValueError, match="video_vit"):
        tiny_encoder()(torch.zeros(1, 3, 1, 8, 8))


# --- VideoMAE end to end --------------------------------------------------------------------------------------------

SPEC = VideoDataSpec(frames=4, channels=1, height=8, width=8, mean=(0.2,), std=(0.3,))


def sprites(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 4, 1, 8, 8): a bright 3x3 square moving one pixel per frame on black."""
    g = gen(seed)
    x = torch.zeros(n, 4, 1, 8, 8, dtype=torch.uint8)
    start = torch.randint(0, 3, (n, 2), generator=g)
    for i in range(n):
        for t in range(4):
            r, c = int(start[i, 0]) + t, int(start[i, 1]) + t
            x[i, t, 0, r:r + 3, c:c + 3] = 200
    return x


def videomae(seed: int = 0, spec: VideoDataSpec = SPEC, **cfg: object) -> VideoMAE:
    enc = tiny_encoder(seed, channels=spec.channels)
    return VideoMAE(enc, VideoMAEConfig(decoder_width=16, decoder_depth=1, decoder_heads=2, **cfg), spec)


def test_videomae_is_registered_for_video() -> None:
    cls = OBJECTIVES.get("videomae")
    assert cls is VideoMAE and cls.modalities == frozenset({"video"}) and cls.requires == {"pooled", "tokens"}
    assert VideoMAEConfig().mask_ratio == 0.9 and VideoMAEConfig().norm_pix


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_normalised_and_the_target_pixels_exact(channels: int) -> None:
    spec = VideoDataSpec(4, channels, 8, 8, (0.2, 0.5, 0.7)[:channels], (0.3, 0.25, 0.2)[:channels])
    obj = videomae(spec=spec)
    x = torch.randint(0, 256, (3, 4, channels, 8, 8), generator=gen(), dtype=torch.uint8)
    v, keep, mask, keep2 = obj.make_views(x, gen())
    mean, std = torch.tensor(spec.mean).view(1, 1, -1, 1, 1), torch.tensor(spec.std).view(1, 1, -1, 1, 1)
    assert torch.allclose(v, (x / 255 - mean) / std, atol=1e-6)
    assert keep.shape == keep2.shape == (3, 2) and mask.shape == (3, 8)
    assert torch.equal(obj.pixels(v), x.float() / 255)  # no ImageNet statistics, any channel count


def test_foreground_term_and_report() -> None:
    obj = videomae()
    res = obj(obj.make_views(sprites(8), gen()))
    assert set(res.terms) == {"reconstruction_loss", "foreground_loss"}
    assert 0 < res.report["masked_foreground_fraction"] < 1
    assert torch.isfinite(res.terms["foreground_loss"])
    empty = obj(obj.make_views(torch.zeros(2, 4, 1, 8, 8, dtype=torch.uint8), gen()))
    assert empty.terms["foreground_loss"].item() == 0.0 and empty.report["masked_foreground_fraction"] == 0.0


def test_a_few_steps_lower_the_loss() -> None:
    obj = videomae(mask_ratio=0.75)
    x = sprites(16)
    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        res = obj(obj.make_views(x, gen(step % 2)))  # two fixed masks
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        losses.append(res.loss.item())
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses  # measured: 0.82 -> 0.57


def test_objective_refuses_other_data() -> None:
    from ssl_tasks.core.errors import UserError
    from ssl_tasks.objectives import DataSpec

    with pytest.raises(UserError, match="video"):
        VideoMAE(tiny_encoder(), VideoMAEConfig(), DataSpec(1, 8, (0.5,), (0.5,)))
    with pytest.raises(UserError, match="tubelets"):
        VideoMAE(tiny_encoder(), VideoMAEConfig(), VideoDataSpec(3, 1, 8, 8, (0.5,), (0.5,)))
    with pytest.raises(ValueError, match="mask_ratio"):
        VideoMAEConfig(mask_ratio=1.0)
