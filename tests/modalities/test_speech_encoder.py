"""The wav2vec 2.0-style encoder: frame counts on the shared grid, padding invariance, layers, registry."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.speech.encoders import Wav2Vec2Encoder
from ssl_tasks.modalities.speech.frames import conv_frames

SMALL = {"conv_channels": 16, "dim": 32, "depth": 2, "heads": 2, "pos_groups": 4}


def _clips(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wave = torch.zeros(len(lengths), width)
    for i, n in enumerate(lengths):
        wave[i, :n] = torch.randn(n, generator=g).clamp(-3, 3) / 3
    return wave, torch.tensor(lengths)


def test_registered_with_the_contract() -> None:
    enc = ENCODERS.get("wav2vec2")(**SMALL)
    assert isinstance(enc, Wav2Vec2Encoder) and enc.modality == "speech" and enc.out_dim == 32
    assert {"pooled", "frames"} <= enc.capabilities


def test_frame_counts_equal_conv_frames() -> None:
    enc = Wav2Vec2Encoder(**SMALL).eval()
    lengths = [399, 400, 719, 720, 1000, 4567, 8000, 16000]
    assert enc.frame_lengths(torch.tensor(lengths)).tolist() == [conv_frames(n) for n in lengths]
    wave, lens = _clips(lengths, 16000)
    with torch.no_grad():
        h, pad = enc.frames(wave, lens)
    assert h.shape == (8, conv_frames(16000), 32)
    assert (~pad).sum(1).tolist() == [max(1, conv_frames(n)) for n in lengths]  # a too-short row keeps one frame


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_padding_does_not_change_frames_or_embedding(norm: str) -> None:
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(**SMALL, conv_norm=norm).eval()
    wave, lens = _clips([3000, 9000, 5000], 9000, seed=1)
    wider = torch.cat([wave, torch.zeros(3, 7000)], dim=1)  # the same clips with more padding
    noisy = wider.clone()
    noisy[0, 3000:] = 0.0
    with torch.no_grad():
        e1, e2 = enc(wave, lens), enc(wider, lens)
        alone = enc(wave[:1, :3000], lens[:1])  # the first clip with no padding at all, alone in its batch
        h1, p1 = enc.frames(wave, lens)
        h2, p2 = enc.frames(wider, lens)
    assert torch.allclose(e1, e2, atol=1e-5) and torch.allclose(e1[:1], alone, atol=1e-5)
    f = h1.shape[1]
    assert torch.equal(p1, p2[:, :f]) and p2[:, f:].all()
    assert torch.allclose(h1[~p1], h2[:, :f][~p1], atol=1e-5)


def test_the_embedding_depends_on_the_audio() -> None:
    enc = Wav2Vec2Encoder(**SMALL).eval()
    wave, lens = _clips([8000, 8000], 8000, seed=2)
    with torch.no_grad():
        e = enc(wave, lens)
    assert not torch.allclose(e[0], e[1], atol=1e-3)


def test_intermediate_layers() -> None:
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(**SMALL).eval()
    wave, lens = _clips([6000, 4000], 6000)
    with torch.no_grad():
        last, _ = enc.frames(wave, lens)
        explicit, _ = enc.frames(wave, lens, layer=2)
        first, pad = enc.frames(wave, lens, layer=1)
    assert torch.allclose(last, explicit) and first.shape == last.shape
    assert not torch.allclose(first[~pad], last[~pad])
    with pytest.raises(ValueError, match="layer must be in 1..2"):
        enc.frames(wave, lens, layer=3)


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="conv_norm"):
        Wav2Vec2Encoder(conv_norm="batch")
    with pytest.raises(ValueError, match="multiple of heads"):
        Wav2Vec2Encoder(dim=30, heads=4)
    with pytest.raises(ValueError, match="T >= 400"):
        Wav2Vec2Encoder(**SMALL)(torch.zeros(2, 300), torch.tensor([300, 300]))
