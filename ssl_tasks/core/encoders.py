"""The encoder registry and base class shared by every modality's encoders.

An encoder maps a modality's batch to pooled features (B, D), exposes ``out_dim``, says which data it encodes
(``modality``) and declares its ``capabilities`` (what objectives may ask of it: ``pooled``, ``tokens``, ...).
Each modality package registers its encoders with ``@ENCODERS.register(name)``. :class:`TokenEncoder` is the
transformer trunk the image and video ViTs share.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.blocks import transformer_blocks
from ssl_tasks.core.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


class Encoder(nn.Module):
    """Base class: pooled features of width ``out_dim``."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled"})
    modality: ClassVar[str]  # the data it encodes
    out_dim: int


class TokenEncoder(Encoder):
    """What the image ViT and the video ViT share: a [CLS] token, pre-norm transformer blocks and a final
    LayerNorm over embedded patch tokens (2-D patches or space-time tubelets), pooled by [CLS] or the token mean.

    A subclass builds its ``embed`` (a ``Conv2d``/``Conv3d`` whose weight is the linear patch embedding), then
    :meth:`_build_trunk` (``cls_token``, ``blocks``, ``norm``: the parameter names every checkpoint holds), then
    :meth:`_init_embedding`; in that order, so a seeded build draws the same weights. It defines
    ``patch_tokens(x)`` (B, N, D) without positions, ``token_grid(x)`` (the grid of ``x``'s tokens) and
    ``pos_embed(*grid, device)`` (1, N, D). ``cls_in_token_dtype``: the [CLS] token is cast to the tokens' dtype
    before joining them (the video ViT); otherwise ``torch.cat`` promotes (the image ViT).
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens"})
    cls_in_token_dtype: ClassVar[bool] = False
    embed: nn.Module
    pool: str

    @staticmethod
    def _check_trunk(width: int, heads: int, pool: str) -> None:
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")

    def _build_trunk(self, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = transformer_blocks(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)

    def _init_embedding(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def token_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) positioned tokens -> (B, 1 + T, D): [CLS] first, after the blocks and final norm."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        z = torch.cat([cls.to(tokens.dtype) if self.cls_in_token_dtype else cls, tokens], dim=1)
        for blk in self.blocks:
            z = blk(z)
        return self.norm(z)

    def forward_tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x -> (B, 1 + N', D); ``keep`` (B, N') long selects which patch tokens enter the encoder."""
        t = self.patch_tokens(x)  # (B, N, D)
        t = t + self.pos_embed(*self.token_grid(x), device=x.device).to(x.dtype)
        if keep is not None:
            t = torch.gather(t, 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # (B, N', D)
        return self.encode(t)

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1 + T, D) encoder output -> (B, D)."""
        return z[:, 0] if self.pool == "cls" else z[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x -> (B, D) pooled features."""
        return self.pooled(self.forward_tokens(x))
