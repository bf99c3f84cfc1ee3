"""Batched on-device views: shapes, determinism, identity at zero strength, per-sample randomness."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews, gaussian_blur, random_resized_crop


def imgs(c: int = 3, n: int = 8, s: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, s, s), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_identity_when_no_augmentation() -> None:
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    y = random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), hflip_p=0.0, g=g)
    assert torch.allclose(y, x, atol=1e-5)


def test_flip_only_mirrors() -> None:
    x = torch.rand(4, 1, 8, 8)
    y = random_resized_crop(x, 8, (1.0, 1.0), (1.0, 1.0), hflip_p=1.0, g=torch.Generator().manual_seed(0))
    assert torch.allclose(y, x.flip(-1), atol=1e-5)


@pytest.mark.parametrize("c", [1, 3])
def test_views_shape_determinism_and_per_sample_randomness(c: int) -> None:
    v = ImageViews(ImageViewConfig(blur_p=0.5), torch.full((c,), 0.5), torch.full((c,), 0.25), size=12)
    x = imgs(c)
    a = v(x, torch.Generator().manual_seed(1))
    b = v(x, torch.Generator().manual_seed(1))
    d = v(x, torch.Generator().manual_seed(2))
    assert a.shape == (8, c, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, d)
    same = v(x[:1].repeat(8, 1, 1, 1), torch.Generator().manual_seed(3))
    assert not torch.allclose(same[0], same[1])  # each sample draws its own parameters


def test_blur_preserves_constant_image_and_mean() -> None:
    x = torch.full((2, 3, 16, 16), 0.7)
    y = gaussian_blur(x, 1.0, (0.5, 2.0), torch.Generator().manual_seed(0))
    assert torch.allclose(y, x, atol=1e-6)


def test_invalid_view_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        ImageViewConfig(crop_scale=(0.0, 1.0))


@pytest.mark.parametrize("name", [n for n in ENCODERS.names() if ENCODERS.get(n).modality == "image"])
@pytest.mark.parametrize("c,s", [(1, 8), (1, 28), (3, 32)])
def test_encoders_pool_to_out_dim(name: str, c: int, s: int) -> None:
    enc = build_encoder(name, c, s)
    assert "pooled" in enc.capabilities
    assert enc(torch.randn(2, c, s, s)).shape == (2, enc.out_dim)


@pytest.mark.parametrize("pool", [1, 2, 7])
def test_small_cnn_grid_pooling(pool: int) -> None:
    enc = build_encoder("small_cnn", 1, 28, width=4, pool=pool).eval()
    x = torch.randn(3, 1, 28, 28)
    out = enc(x)
    assert enc.out_dim == 16 * pool * pool and out.shape == (3, enc.out_dim)
    fmap = enc.features[:-2](x)  # (3, 16, 7, 7): the last feature map, before pooling
    if pool == 1:
        assert torch.allclose(out, fmap.mean(dim=(2, 3)), atol=1e-5)
    if pool == 7:  # the whole map, flattened channel-major
        assert torch.allclose(out, fmap.flatten(1), atol=1e-6)


def test_small_cnn_refuses_a_bad_pool() -> None:
    from ssl_tasks.core.errors import UserError

    with pytest.raises(UserError, match="pool must be a positive int"):
        build_encoder("small_cnn", 1, 28, pool=0)
