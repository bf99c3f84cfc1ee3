"""A wav2vec 2.0-style speech encoder: waveform (B, T) -> frames (B, F, D) -> utterance embedding (B, D).

Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0", NeurIPS 2020, arXiv:2006.11477, Sec. 2 and App. A / B:

* feature encoder: the seven 1-D convolutions of ``frames.CONV_LAYERS`` (kernels 10,3,3,3,3,2,2; strides
  5,2,2,2,2,2,2; no padding: one frame per 320 samples, 400-sample receptive field), GELU after each, slim
  (``conv_channels`` 128 rather than 512: at this scale the wide stack costs twice the time for nothing);
* its normalisation, ``conv_norm``: ``"group"`` (default), the base model's GroupNorm with one group per channel
  on the first convolution only, which normalises each channel over time; a group norm over time would see the
  zero padding, so here its statistics are taken over each row's valid samples only. Or ``"layer"``, a LayerNorm
  over channels after every convolution, as the reference's large models (``extractor_mode=layer_norm``). On this
  2-core CPU the group norm stack ran a forward + backward of 32 one-second clips in 2.7-2.9 s against 4.1-6.7 s
  for the layer norm one (seven extra norms over long sequences; measured alternately, other jobs running);
* a LayerNorm over the local features and a linear projection to the transformer's width (the objectives'
  ``local_features`` / ``project``), dropout;
* a convolutional relative positional embedding (a grouped 1-D convolution over frames, GELU, added to the
  input; the reference: kernel 128, 16 groups, weight-normalised; here kernel 15 and 16 groups by default since
  clips are 6-113 frames long, with plain weights);
* pre-LN transformer blocks (``core.blocks.transformer_blocks``) and a final LayerNorm. The base model is post-LN
  with a warm-up of 32k updates; pre-LN trains stably with the short warm-ups of a few CPU-minutes (the reference's
  large models are pre-LN for the same reason).

Padding: each row's valid frames are ``conv_frames(length)`` (a frame whose receptive field lies inside the clip);
attention, the positional convolution (padded frames zeroed first) and pooling see only those, so zero-padding a
clip does not change its frames or its embedding (tested). A row with no full frame keeps one (its first), so every
row has something to pool.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.blocks import transformer_blocks
from ssl_tasks.core.encoders import ENCODERS, Encoder
from ssl_tasks.modalities.speech.frames import CONV_LAYERS, receptive_field

CONV_NORMS = ("layer", "group")
CONV_WINDOW = receptive_field()[0]  # samples in one frame: a shorter row has none


def frame_counts(lengths: torch.Tensor) -> torch.Tensor:
    """``conv_frames`` of each length, (B,) int64 -> (B,) int64 (vectorised; the same arithmetic)."""
    n = lengths.long()
    for kernel, stride in CONV_LAYERS:
        n = torch.where(n >= kernel, torch.div(n - kernel, stride, rounding_mode="floor") + 1, torch.zeros_like(n))
    return n


def padding_mask(counts: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B,) valid frames -> (B, F) bool, True = padding; at least the first frame of every row is valid."""
    pos = torch.arange(num_frames, device=counts.device)
    return pos[None] >= counts.clamp_min(1)[:, None]


def masked_mean(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """(B, F, D) frames, (B, F) padding -> (B, D) mean over the valid frames."""
    keep = (~pad).unsqueeze(-1).to(x.dtype)  # (B, F, 1)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1)


class _ValidGroupNorm(nn.Module):
    """GroupNorm with one group per channel (wav2vec 2.0 base's first layer) whose statistics over time are taken on
    each row's valid samples only, so padding does not change them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x: (B, C, L); valid: (B, L) bool -> (B, C, L)."""
        w = valid.unsqueeze(1).to(x.dtype)  # (B, 1, L)
        n = w.sum(-1, keepdim=True).clamp_min(1)
        mean = (x * w).sum(-1, keepdim=True) / n  # (B, C, 1)
        var = ((x - mean).pow(2) * w).sum(-1, keepdim=True) / n
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight[:, None] + self.bias[:, None]


class FeatureEncoder(nn.Module):
    """The convolutional feature encoder: (B, T) waveform -> (B, C, F) local features (before the feature norm)."""

    def __init__(self, channels: int = 128, norm: str = "group") -> None:
        super().__init__()
        if norm not in CONV_NORMS:
            raise ValueError(f"unknown conv_norm {norm!r}; valid: {', '.join(CONV_NORMS)}")
        self.norm_kind = norm
        dims = [1] + [channels] * len(CONV_LAYERS)
        self.convs = nn.ModuleList(nn.Conv1d(dims[i], dims[i + 1], k, stride=s, bias=False)
                                   for i, (k, s) in enumerate(CONV_LAYERS))
        for conv in self.convs:  # as the reference: PyTorch's default init shrinks activations ~100x over 7 layers
            nn.init.kaiming_normal_(conv.weight)
        if norm == "layer":
            self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in CONV_LAYERS)
        else:
            self.group_norm = _ValidGroupNorm(channels)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)  # (B, 1, T)
        n = lengths.long()
        for i, conv in enumerate(self.convs):
            x = conv(x)  # (B, C, L)
            k, s = CONV_LAYERS[i]
            n = torch.where(n >= k, torch.div(n - k, s, rounding_mode="floor") + 1, torch.zeros_like(n))
            if self.norm_kind == "layer":
                x = self.norms[i](x.transpose(1, 2)).transpose(1, 2)
            elif i == 0:
                valid = torch.arange(x.shape[-1], device=x.device)[None] < n.clamp_min(1)[:, None]  # (B, L)
                x = self.group_norm(x, valid)
            x = F.gelu(x)
        return x


class ConvPositions(nn.Module):
    """wav2vec 2.0's relative positional embedding: GELU(grouped conv over frames), same length out."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.trim = 1 if kernel % 2 == 0 else 0  # an even kernel makes one extra frame (the reference drops it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, D) with padded frames zeroed -> (B, F, D)."""
        y = self.conv(x.transpose(1, 2))  # (B, D, F + trim)
        if self.trim:
            y = y[..., :-self.trim]
        return F.gelu(y).transpose(1, 2)


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(Encoder):
    """Waveforms (B, T) float32 with valid lengths (B,) -> utterance embeddings (B, dim); see the module docstring.

    Defaults (128 conv channels, 4 pre-LN blocks of width 144, 4 heads) train on two CPU cores.
    """

    modality: ClassVar[str] = "speech"
    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "frames"})

    def __init__(self, conv_channels: int = 128, conv_norm: str = "group", dim: int = 144, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, pos_kernel: int = 15, pos_groups: int = 16,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        if dim % pos_groups or pos_kernel < 1:
            raise ValueError(f"dim {dim} must be a multiple of pos_groups {pos_groups}, and pos_kernel >= 1")
        if depth < 1 or conv_channels < 1:
            raise ValueError("wav2vec2 needs depth >= 1 and conv_channels >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.conv_channels, self.out_dim, self.depth = conv_channels, dim, depth
        self.feature_encoder = FeatureEncoder(conv_channels, conv_norm)
        self.feature_norm = nn.LayerNorm(conv_channels)
        self.project_in = nn.Linear(conv_channels, dim)
        self.drop = nn.Dropout(dropout)
        self.positions = ConvPositions(dim, pos_kernel, pos_groups)
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) valid samples -> (B,) valid frames (``conv_frames`` of each)."""
        return frame_counts(torch.as_tensor(lengths))

    def local_features(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T), (B,) -> local features (B, F, C) before the feature norm, and the padding mask (B, F) (True =
        pad). wav2vec 2.0's feature penalty is their mean square; ``feature_norm`` gives the quantizer's input."""
        if wave.ndim != 2 or wave.shape[1] < CONV_WINDOW:
            raise ValueError(f"wav2vec2 takes (B, T) waveforms with T >= {CONV_WINDOW} samples, got "
                             f"{tuple(wave.shape)}")
        z = self.feature_encoder(wave, lengths).transpose(1, 2)  # (B, F, C)
        return z, padding_mask(self.frame_lengths(lengths).to(z.device), z.shape[1])

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """(B, F, C) normalised local features -> (B, F, D) transformer inputs (before any masking)."""
        return self.drop(self.project_in(z))

    def context(self, x: torch.Tensor, pad: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """(B, F, D) inputs (masked or not) -> (B, F, D) outputs of block ``layer`` (1-based; None: the last, with
        the final LayerNorm). Padded frames are zeroed before the positional convolution and never attended to."""
        if layer is not None and not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be in 1..{self.depth}, got {layer}")
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        x = x + self.positions(x)
        for blk in self.blocks[: layer or self.depth]:
            x = blk(x, src_key_padding_mask=pad)
        return self.norm(x) if layer is None or layer == self.depth else x

    def frames(self, wave: torch.Tensor, lengths: torch.Tensor, layer: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T), (B,) -> per-frame outputs of block ``layer`` (B, F, D) and the padding mask (B, F)."""
        z, pad = self.local_features(wave, lengths)
        return self.context(self.project(self.feature_norm(z)), pad, layer), pad

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T), (B,) -> (B, D): the mean of the last block's outputs over each row's valid frames."""
        h, pad = self.frames(wave, lengths)
        return masked_mean(h, pad)
