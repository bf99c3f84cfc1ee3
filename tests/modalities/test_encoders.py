"""Image encoders: the channels-last layout changes speed, not results."""

from __future__ import annotations

import copy

import pytest
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.encoders import build_encoder


def _conv(m: torch.nn.Module) -> torch.nn.Conv2d:  # a conv with several input channels: its layout shows
    return next(c for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.in_channels > 1)


@pytest.mark.parametrize(("name", "channels", "size", "kwargs"), [
    ("small_cnn", 1, 28, {"width": 8, "pool": 7}),
    ("small_cnn", 3, 8, {"width": 8}),
    ("resnet18", 3, 16, {}),
])
def test_channels_last_matches_contiguous(name: str, channels: int, size: int, kwargs: dict) -> None:
    torch.manual_seed(0)
    fast = build_encoder(name, channels, size, **kwargs)
    conv = _conv(fast)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    plain = build_encoder(name, channels, size, **kwargs, channels_last=False)
    plain.load_state_dict(copy.deepcopy(fast.state_dict()))  # same weights, NCHW storage
    assert _conv(plain).weight.is_contiguous()
    fast.double().eval()  # float64: the layouts' different summation orders vanish
    plain.double().eval()
    assert _conv(fast).weight.is_contiguous(memory_format=torch.channels_last)  # .double() keeps the layout
    x = torch.randn(4, channels, size, size, dtype=torch.float64)
    a, b = fast(x), plain(x)
    assert a.shape == (4, fast.out_dim)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    a.sum().backward()  # gradients agree too
    b.sum().backward()
    torch.testing.assert_close(conv.weight.grad, _conv(plain).weight.grad, rtol=1e-9, atol=1e-9)


def test_channels_last_rejects_non_bool() -> None:
    with pytest.raises(UserError, match="channels_last must be true or false"):
        build_encoder("small_cnn", 1, 8, channels_last="yes")
