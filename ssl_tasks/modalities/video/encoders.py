"""A small video ViT over space-time tubelets (the ViT-B backbone of VideoMAE, Tong et al. 2022, arXiv:2203.12602,
Sec. 3.3, at CPU scale).

A clip (B, T, C, H, W), normalised per channel, is cut into ``tubelet x p x p`` tubelets (VideoMAE: 2 x 16 x 16;
here 2 x 8 x 8 on 32 x 32 frames) and each is embedded linearly (the weights of a ``Conv3d`` with stride = kernel;
the forward pass runs it as one matrix product over the flattened tubelets, the same arithmetic 8x faster than
PyTorch's CPU Conv3d on 16 x 32 x 32 clips). Tokens are ordered t-major, then row-major over the spatial grid.
Positions are fixed 3-D sin-cos embeddings (``sincos_3d``) computed for whatever grid the clip has, so a masked
subset of tubelets needs no interpolation (the reference uses a 1-D sin-cos table over the flattened index).
The blocks are the image ViT's (``core.blocks.transformer_blocks``: pre-norm, GELU), with a [CLS] token
prepended and a final LayerNorm; the pooled feature is the token mean by default (VideoMAE's fine-tuning pools
by mean) or [CLS].

Methods, like the image ViT's (both are ``core.encoders.TokenEncoder``\ s): ``patch_tokens`` (no positions),
``grid``, ``pos_embed``, ``encode`` ([CLS] first), ``forward_tokens(x, keep)``, ``pooled``, ``forward``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.encoders import ENCODERS, TokenEncoder
from ssl_tasks.modalities.video.masking import tubelet_patchify


def _sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) [sin | cos] of ``dim / 2`` geometric frequencies; dim even."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, device=pos.device, dtype=torch.float32) / (dim // 2))  # (dim/2,)
    ang = pos[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([ang.sin(), ang.cos()], dim=1)  # (N, dim)


def sincos_3d(gt: int, gh: int, gw: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(gt*gh*gw, dim) fixed sin-cos positions, t-major then row-major: the channels are split into a time part
    and two equal spatial parts (each even: ``2 * (dim // 6)`` channels for h and for w, the rest for t)."""
    if dim % 2 or dim < 6:
        raise ValueError(f"width must be even and >= 6 for 3-D sin-cos positions, got {dim}")
    ds = 2 * (dim // 6)
    ts, ys, xs = torch.meshgrid(torch.arange(gt, device=device, dtype=torch.float32),
                                torch.arange(gh, device=device, dtype=torch.float32),
                                torch.arange(gw, device=device, dtype=torch.float32), indexing="ij")
    parts = [_sincos_1d(ts.reshape(-1), dim - 2 * ds), _sincos_1d(ys.reshape(-1), ds), _sincos_1d(xs.reshape(-1), ds)]
    return torch.cat(parts, dim=1)  # (N, D)


@ENCODERS.register("video_vit")
class VideoViT(TokenEncoder):
    """Tubelet embedding, ``depth`` pre-norm transformer blocks, [CLS] token; pooled = token mean or [CLS] (the
    trunk, ``encode``, ``forward_tokens``, ``pooled`` and ``forward`` are ``core.encoders.TokenEncoder``'s, with
    the [CLS] token cast to the tokens' dtype).

    Input: float clips (B, T, C, H, W) already normalised, ``(x / 255 - mean) / std`` per channel.
    """

    modality: ClassVar[str] = "video"
    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens"})
    cls_in_token_dtype: ClassVar[bool] = True

    def __init__(self, in_channels: int, frames: int, image_size: int, tubelet: int = 2, patch_size: int = 8,
                 width: int = 128, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, pool: str = "mean") -> None:
        super().__init__()
        if tubelet < 1 or patch_size < 1 or depth < 1:
            raise ValueError(f"tubelet, patch_size and depth must be >= 1, got {tubelet}, {patch_size}, {depth}")
        if frames % tubelet:
            raise ValueError(f"frames {frames} is not a multiple of tubelet {tubelet}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self._check_trunk(width, heads, pool)
        sincos_3d(1, 1, 1, width)  # validates width
        self.in_channels, self.frames, self.tubelet, self.patch_size = in_channels, frames, tubelet, patch_size
        self.width, self.pool, self.out_dim = width, pool, width
        self.num_patches = (frames // tubelet) * (image_size // patch_size) ** 2
        self.embed = nn.Conv3d(in_channels, width, (tubelet, patch_size, patch_size),
                               stride=(tubelet, patch_size, patch_size))
        self._build_trunk(width, depth, heads, mlp_ratio)
        self._init_embedding()

    def grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """(B, T, C, H, W) -> (gt, gh, gw), the tubelet grid."""
        if x.ndim != 5 or x.shape[1] % self.tubelet or x.shape[3] % self.patch_size or x.shape[4] % self.patch_size:
            raise ValueError(f"video_vit takes (B, T, C, H, W) clips with T a multiple of {self.tubelet} and H, W "
                             f"of {self.patch_size}, got {tuple(x.shape)}")
        return x.shape[1] // self.tubelet, x.shape[3] // self.patch_size, x.shape[4] // self.patch_size

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, N, D), N = gt * gh * gw, t-major then row-major; no positions added."""
        self.grid(x)  # validates the shape
        w = self.embed.weight.permute(0, 2, 3, 4, 1).reshape(self.width, -1)  # (D, tu*p*p*C), patchify's order
        return F.linear(tubelet_patchify(x, self.tubelet, self.patch_size), w, self.embed.bias)  # (B, N, D)

    def pos_embed(self, gt: int, gh: int, gw: int, device: torch.device | None = None) -> torch.Tensor:
        """(1, gt*gh*gw, D) fixed positions."""
        return sincos_3d(gt, gh, gw, self.width, device).unsqueeze(0)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """The tubelet grid (``grid``), for ``TokenEncoder.forward_tokens``."""
        return self.grid(x)


__all__ = ["VideoViT", "sincos_3d"]
