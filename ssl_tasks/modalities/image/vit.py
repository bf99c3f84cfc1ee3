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

from ssl_tasks.core.encoders import TokenEncoder
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
class ViT(TokenEncoder, Encoder):
    """Patch embedding, ``depth`` pre-norm transformer blocks, [CLS] token; pooled = [CLS] or token mean (the
    trunk, ``encode``, ``forward_tokens``, ``pooled`` and ``forward`` are ``core.encoders.TokenEncoder``'s)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens"})

    def __init__(self, in_channels: int, image_size: int, patch_size: int = 4, width: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0, pool: str = "cls", drop_path: float = 0.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self._check_trunk(width, heads, pool)
        if drop_path:
            raise ValueError("drop_path is not supported")
        sincos_2d(1, 1, width)  # validates width
        self.patch_size, self.width, self.pool = patch_size, width, pool
        self.in_channels = in_channels
        self.grid = image_size // patch_size
        self.num_patches = self.grid**2
        self.embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self._build_trunk(width, depth, heads, mlp_ratio)
        self.out_dim = width
        self._init_embedding()

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), N = (H/p) * (W/p), row-major; no positions added."""
        return self.embed(x).flatten(2).transpose(1, 2)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """(B, C, H, W) -> (gh, gw), the patch grid of ``x`` (its size may differ from ``image_size``'s)."""
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def pos_embed(self, gh: int, gw: int, device: torch.device | None = None) -> torch.Tensor:
        """(1, gh*gw, D) fixed positions."""
        return sincos_2d(gh, gw, self.width, device).unsqueeze(0)
