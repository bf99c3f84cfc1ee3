"""Multi-crop views: counts, sizes (ViT-friendly local size), global views first, seeded determinism."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.modalities.image.multicrop import MultiCrop, MultiCropConfig, default_local_size
from ssl_tasks.modalities.image.views import ImageViewConfig


def imgs(c: int = 3, n: int = 6, s: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, s, s), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def crop(c: int, s: int, **kw: object) -> MultiCrop:
    return MultiCrop(MultiCropConfig(**kw), ImageViewConfig(), torch.full((c,), 0.5), torch.full((c,), 0.25), s)


@pytest.mark.parametrize("c,s,n", [(1, 8, 3), (3, 16, 2), (1, 28, 0)])
def test_counts_sizes_and_global_first(c: int, s: int, n: int) -> None:
    mc = crop(c, s, local_crops=n)
    out = mc(imgs(c, s=s), torch.Generator().manual_seed(1))
    assert len(out) == mc.num_views == 2 + n
    assert [v.shape for v in out[:2]] == [(6, c, s, s)] * 2
    assert [v.shape for v in out[2:]] == [(6, c, s // 2, s // 2)] * n
    assert all(v.dtype == torch.float32 for v in out)


@pytest.mark.parametrize("size,patch,want", [(8, 1, 4), (8, 2, 4), (8, 4, 4), (8, 8, 8), (28, 1, 14), (28, 7, 14),
                                             (28, 4, 12), (32, 4, 16), (32, 16, 16), (5, 8, 2)])
def test_default_local_size_tiles_into_patches(size: int, patch: int, want: int) -> None:
    got = default_local_size(size, patch)
    assert got == want
    if patch <= size:
        assert got % patch == 0


def test_patch_size_and_explicit_local_size() -> None:
    mc = MultiCrop(MultiCropConfig(local_crops=1), ImageViewConfig(), torch.full((1,), 0.5), torch.full((1,), 0.25),
                   28, patch_size=4)
    assert mc.local_size == 12
    mc = MultiCrop(MultiCropConfig(local_crops=1, local_size=10), ImageViewConfig(), torch.full((1,), 0.5),
                   torch.full((1,), 0.25), 28, patch_size=4)
    assert mc(imgs(1, s=28), torch.Generator().manual_seed(0))[2].shape == (6, 1, 10, 10)


def test_seeded_determinism_and_distinct_crops() -> None:
    mc = crop(3, 16, local_crops=2)
    a = mc(imgs(), torch.Generator().manual_seed(3))
    b = mc(imgs(), torch.Generator().manual_seed(3))
    d = mc(imgs(), torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], d[0])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[2], a[3])  # each crop draws its own parameters


def test_global_crops_cover_more_than_local_ones() -> None:
    """A one-pixel dot is seen by a full-scale global crop, but usually missed by tiny local crops."""
    x = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    x[:, :, 3, 3] = 255
    views = ImageViewConfig(hflip_p=0.0, jitter_p=0.0)
    mc = MultiCrop(MultiCropConfig(global_scale=(1.0, 1.0), local_scale=(0.05, 0.06), local_crops=1), views,
                   torch.zeros(1), torch.ones(1), 16)
    out = mc(x, torch.Generator().manual_seed(0))
    seen = [float((v.amax(dim=(1, 2, 3)) > 0.05).float().mean()) for v in out]
    assert seen[0] == seen[1] == 1.0 and seen[2] < 0.5


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="local_scale"):
        MultiCropConfig(local_scale=(0.0, 0.4))
    with pytest.raises(ValueError, match="local_crops"):
        MultiCropConfig(local_crops=-1)
