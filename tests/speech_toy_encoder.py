"""``toy_speech``: a test-only encoder satisfying the speech contract (``modalities/speech/frames.py``), on the
wav2vec 2.0 frame grid, small enough for unit tests. See ``speech_toy.py``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS, Encoder
from ssl_tasks.modalities.speech.frames import CONV_LAYERS, conv_frames


@ENCODERS.register("toy_speech")
class ToySpeechEncoder(Encoder):
    """(B, T) waveforms -> (B, out_dim): convolutions with wav2vec 2.0's kernels and strides, mean over valid frames."""

    modality: ClassVar[str] = "speech"

    def __init__(self, channels: int = 16, out_dim: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(CONV_LAYERS):
            layers += [nn.Conv1d(1 if i == 0 else channels, channels, kernel, stride), nn.GELU()]
            if i == 0:
                layers.append(nn.GroupNorm(channels, channels))
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Linear(channels, out_dim)
        self.out_dim = out_dim

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.tensor([conv_frames(int(n)) for n in lengths], dtype=torch.long, device=lengths.device)

    def frames(self, wave: torch.Tensor, lengths: torch.Tensor,
               layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.proj(self.conv(wave.float()[:, None]).transpose(1, 2))  # (B, F, D)
        pad = torch.arange(h.shape[1], device=h.device)[None] >= self.frame_lengths(lengths)[:, None]  # (B, F)
        return h, pad

    @staticmethod
    def pool(h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        keep = (~pad).float()[..., None]  # (B, F, 1)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, D)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.frames(wave, lengths))
