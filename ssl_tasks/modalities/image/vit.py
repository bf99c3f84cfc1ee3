"""A small Vision Transformer for tiny images (Dosovitskiy et al. 2021, arXiv:2010.11929).

Pre-norm blocks are PyTorch's own ``nn.TransformerEncoderLayer``; positions are fixed 2-D sin-cos
embeddings (as in MAE, He et al. 2022, arXiv:2111.06377), computed for whatever patch grid the input
has, so multi-crop views of several sizes and masked subsets of patches need no interpolation.

Besides pooled features (``forward``) the ViT offers its token sequence, which masked-image and
joint-embedding objectives build on:

- ``patch_tokens(x)``: (B, N, D) patch embeddings, positions not yet added;
- ``pos_embed(gh, gw)``: (1, N, D) the positions of a gh x gw grid;
- ``encode(tokens)``: prepend [CLS], run the blocks and the final norm: (B, T, D) -> (B, 1 + T, D);
- ``forward_tokens(x, keep)``: all of it, optionally keeping only patch indices ``keep`` (B, N').
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.blocks import transformer_blocks
from ssl_tasks.modalities.image.encoders import ENCODERS, Encoder


def sincos_2d(gh: int, gw: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(gh*gw, dim) fixed sin-cos position table, row-major over the grid; dim must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"width must be a multiple of 4 for 2-D sin-cos positions, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(gh, device=device, dtype=torch.float32),
                            torch.arange(gw, device=device, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim // 4))  # (D/4,)
    out = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        ang = pos[:, None] * omega[None]  # (N, D/4)
        out += [ang.sin(), ang.cos()]
    return torch.cat(out, dim=1)  # (N, D)


@ENCODERS.register("vit")
class ViT(Encoder):
    """Patch embedding, ``depth`` pre-norm transformer blocks, [CLS] token; pooled = [CLS] or token mean."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens"})

    def __init__(self, in_channels: int, image_size: int, patch_size: int = 4, width: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0, pool: str = "cls", drop_path: float = 0.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if drop_path:
            raise ValueError("drop_path is not supported")
        sincos_2d(1, 1, width)  # validates width
        self.patch_size, self.width, self.pool = patch_size, width, pool
        self.in_channels = in_channels
        self.grid = image_size // patch_size
        self.num_patches = self.grid**2
        self.embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = transformer_blocks(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.out_dim = width
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), N = (H/p) * (W/p), row-major; no positions added."""
        return self.embed(x).flatten(2).transpose(1, 2)

    def pos_embed(self, gh: int, gw: int, device: torch.device | None = None) -> torch.Tensor:
        """(1, gh*gw, D) fixed positions."""
        return sincos_2d(gh, gw, self.width, device).unsqueeze(0)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) positioned tokens -> (B, 1 + T, D): [CLS] first, after the blocks and final norm."""
        z = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for blk in self.blocks:
            z = blk(z)
        return self.norm(z)

    def forward_tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + N', D); ``keep`` (B, N') long selects which patch tokens enter the encoder."""
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        t = self.patch_tokens(x) + self.pos_embed(gh, gw, x.device).to(x.dtype)  # (B, N, D)
        if keep is not None:
            t = torch.gather(t, 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # (B, N', D)
        return self.encode(t)

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1 + T, D) encoder output -> (B, D)."""
        return z[:, 0] if self.pool == "cls" else z[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D)"""
        return self.pooled(self.forward_tokens(x))
