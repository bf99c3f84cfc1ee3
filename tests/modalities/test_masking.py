"""Batched patch masks: exact ratios, consistent keep/mask, blocks inside the grid, disjoint context, seeds."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.modalities.image.masking import block_masks, patchify, random_masking, unpatchify


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("n", "ratio", "n_keep"), [(16, 0.75, 4), (64, 0.75, 16), (49, 0.5, 24), (16, 0.0, 16)])
def test_random_masking_ratio_is_exact_and_keep_matches_mask(n: int, ratio: float, n_keep: int) -> None:
    keep, mask = random_masking(32, n, ratio, gen())
    assert keep.shape == (32, n_keep) and mask.shape == (32, n) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) == n - n_keep).all()
    assert not mask.gather(1, keep).any()  # kept patches are exactly the unmasked ones
    assert (keep.diff(dim=1) > 0).all()  # ascending, no repeats
    rebuilt = torch.ones_like(mask).scatter_(1, keep, False)
    assert torch.equal(rebuilt, mask)


def test_random_masking_differs_per_sample_and_repeats_per_seed() -> None:
    k1, m1 = random_masking(64, 16, 0.75, gen(3))
    k2, m2 = random_masking(64, 16, 0.75, gen(3))
    assert torch.equal(k1, k2) and torch.equal(m1, m2)
    assert len({tuple(r) for r in k1.tolist()}) > 32  # not one mask for the whole batch
    assert not torch.equal(random_masking(64, 16, 0.75, gen(4))[0], k1)
    # every patch is masked about 75% of the time
    assert torch.allclose(random_masking(4000, 16, 0.75, gen(0))[1].float().mean(0), torch.full((16,), 0.75), atol=0.04)


@pytest.mark.parametrize("ratio", [1.0, 0.99, -0.1])
def test_random_masking_refuses_ratios_leaving_nothing_visible(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        random_masking(2, 16, ratio, gen())


def _as_mask(idx: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(idx.shape[0], n, dtype=torch.bool).scatter_(1, idx.reshape(idx.shape[0], -1), True)


@pytest.mark.parametrize(("gh", "gw"), [(4, 4), (8, 8), (14, 14), (6, 9)])
def test_block_masks_shapes_grid_rectangles_and_disjoint_context(gh: int, gw: int) -> None:
    for seed in range(5):
        ctx, tgt = block_masks(16, gh, gw, gen(seed), num_targets=4)
        b, m, nt = tgt.shape
        assert (b, m) == (16, 4) and ctx.shape[0] == 16 and ctx.shape[1] >= 1
        assert ctx.min() >= 0 and ctx.max() < gh * gw and tgt.min() >= 0 and tgt.max() < gh * gw
        assert (ctx.diff(dim=1) > 0).all()  # distinct context patches
        rows, cols = tgt // gw, tgt % gw  # (B, M, N_tgt)
        h = rows.amax(-1) - rows.amin(-1) + 1
        w = cols.amax(-1) - cols.amin(-1) + 1
        assert (h * w == nt).all()  # each target is a full h x w rectangle, inside the grid
        assert (tgt.diff(dim=-1) > 0).all()
        assert not (_as_mask(ctx, gh * gw) & _as_mask(tgt, gh * gw)).any()  # context never sees a target
        assert ctx.shape[1] >= 4


def test_block_masks_target_area_follows_the_scale() -> None:
    sizes = [block_masks(2, 14, 14, gen(s))[1].shape[-1] for s in range(50)]
    assert all(0.15 * 196 * 0.8 <= n <= 0.2 * 196 * 1.25 for n in sizes)  # rounding to whole rows/cols
    assert len(set(sizes)) > 1  # drawn per batch


def test_block_masks_repeat_per_seed_and_differ_across_samples() -> None:
    a, b = block_masks(32, 8, 8, gen(1)), block_masks(32, 8, 8, gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len({tuple(r) for r in a[1][:, 0].tolist()}) > 4  # blocks placed per sample
    c = block_masks(32, 8, 8, gen(2))
    assert not (a[1].shape == c[1].shape and torch.equal(a[1], c[1]))


def test_block_masks_never_empty_when_targets_cover_the_grid() -> None:
    """2x2 grid, targets as large as the grid: the fallback keeps the context block (overlapping targets)."""
    ctx, tgt = block_masks(8, 2, 2, gen(0), num_targets=2, target_scale=(1.0, 1.0), min_context=1, max_tries=3)
    assert ctx.shape[1] >= 1 and tgt.shape == (8, 2, 4)


@pytest.mark.parametrize(("c", "h", "w", "p"), [(1, 8, 8, 2), (3, 32, 32, 4), (3, 12, 8, 4)])
def test_patchify_round_trip_and_layout(c: int, h: int, w: int, p: int) -> None:
    x = torch.randn(2, c, h, w)
    t = patchify(x, p)
    assert t.shape == (2, (h // p) * (w // p), p * p * c)
    assert torch.equal(unpatchify(t, p, h // p, w // p), x)
    # patch 1 is the second patch of the first row; its first entry is pixel (0, p) of every channel in turn
    assert torch.equal(t[:, 1, :c], x[:, :, 0, p])


def test_patchify_matches_the_vit_patch_order() -> None:
    """Patch n of ``patchify`` is the patch the ViT's conv embedding puts at token n."""
    from ssl_tasks.modalities.image.vit import ViT

    vit = ViT(3, 8, patch_size=2, width=8, depth=1, heads=2)
    x = torch.randn(2, 3, 8, 8)
    w = vit.embed.weight.permute(0, 2, 3, 1).reshape(8, -1)  # (D, p*p*C) in (p, p, C) order
    expected = patchify(x, 2) @ w.T + vit.embed.bias  # (B, N, D)
    assert torch.allclose(vit.patch_tokens(x), expected, atol=1e-5)


def test_patchify_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError, match="multiple"):
        patchify(torch.zeros(1, 1, 7, 8), 2)
