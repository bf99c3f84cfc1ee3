"""Transformer blocks shared by every modality's encoders, decoders and predictors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def transformer_blocks(width: int, depth: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> nn.ModuleList:
    """``depth`` pre-norm blocks with a GELU MLP (PyTorch's own ``nn.TransformerEncoderLayer``).

    ``dropout`` applies to attention weights and residual branches: 0 for the vision models (as in ViT/MAE),
    0.1 for the text encoders (as in BERT), where SimCSE also uses it as its only augmentation.
    """
    return nn.ModuleList(
        nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout=dropout, activation="gelu",
                                   batch_first=True, norm_first=True)
        for _ in range(depth)
    )


def rotate_half_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation (Su et al. "RoFormer", arXiv:2104.09864): (..., L, Dh) with (L, Dh/2) angles' cos/sin.

    Channel pairs (i, i + Dh/2) are rotated by the angle of their position, so the dot product of a query at
    position m and a key at n depends on m - n only.
    """
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rope_angles(length: int, head_dim: int, device: torch.device, base: float = 10000.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, Dh/2) cos and sin of position x frequency, frequencies ``base ** (-2i / Dh)``."""
    freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)  # (Dh/2,)
    ang = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freq  # (L, Dh/2)
    return ang.cos(), ang.sin()


class PositionBlock(nn.Module):
    """Pre-norm transformer block (GELU MLP) whose self-attention sees relative positions: rotary embeddings
    (RoPE) and/or an additive bias per offset (:class:`RelativePositionBias`).

    The same layout as ``nn.TransformerEncoderLayer(norm_first=True)``: dropout on the attention weights and on
    both residual branches, and after the MLP's activation. Positions enter only through the attention, so a
    token's attention to its neighbours does not have to be learned from absolute positions first.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        if (width // heads) % 2:  # checked for every position kind: RoPE pairs channels
            raise ValueError(f"rotary embeddings need an even head width; width {width} / heads {heads} is odd")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), with the mask and rotary angles that every block of the pass shares."""
        x = self.self_attend(x, ctx)
        return x + self.drop(self.mlp(self.norm2(x)))

    def self_attend(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """The attention half of the block, residual included."""
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if ctx.rope is not None:
            cos, sin = (t.to(q.dtype) for t in ctx.rope)
            q, k = rotate_half_pairs(q, cos, sin), rotate_half_pairs(k, cos, sin)
        mask = None if ctx.mask is None else ctx.mask.to(q.dtype) if ctx.mask.is_floating_point() else ctx.mask
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=ctx.is_causal)  # (B, H, L, Dh)
        return x + self.drop(self.proj(o.transpose(1, 2).reshape(b, length, d)))


class PositionDecoderBlock(PositionBlock):
    """:class:`PositionBlock` with cross-attention to an encoder's states between its self-attention and MLP, as
    in ``nn.TransformerDecoderLayer(norm_first=True)``. Only the self-attention sees positions (rotary or
    relative bias, through ``ctx``); the cross-attention is by content, as in T5."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__(width, heads, mlp_ratio, dropout)
        self.norm_cross = nn.LayerNorm(width)
        self.q_cross, self.kv_cross, self.proj_cross = (nn.Linear(width, width), nn.Linear(width, 2 * width),
                                                        nn.Linear(width, width))

    def forward(self, x: torch.Tensor, ctx: AttentionContext, memory: torch.Tensor | None = None,
                memory_pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) decoder states, ``memory`` (B, L, D) encoder states, ``memory_pad`` optional (B, L) bool,
        True at padding -> (B, T, D)."""
        if memory is None:
            raise ValueError("a decoder block needs the encoder's states (memory)")
        x = self.self_attend(x, ctx)
        b, t, d = x.shape
        dh = d // self.heads
        q = self.q_cross(self.norm_cross(x)).view(b, t, self.heads, dh).transpose(1, 2)  # (B, H, T, Dh)
        k, v = self.kv_cross(memory).view(b, memory.shape[1], 2, self.heads, dh).permute(2, 0, 3, 1, 4)
        mask = None if memory_pad is None else ~memory_pad[:, None, None, :]  # (B, 1, 1, L) True: attend
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj_cross(o.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


@dataclass(frozen=True)
class AttentionContext:
    """What the :class:`PositionBlock`s of one forward pass share: the attention mask (None, boolean or an
    additive float bias with -inf where a key is not allowed), whether SDPA applies its own causal mask instead,
    and RoPE's (L, Dh/2) cos and sin (None: queries and keys are not rotated)."""

    mask: torch.Tensor | None
    is_causal: bool
    rope: tuple[torch.Tensor, torch.Tensor] | None


def attention_context(length: int, head_dim: int, device: torch.device, pad: torch.Tensor | None = None,
                      causal: bool = False, bias: torch.Tensor | None = None, rotary: bool = True, window: int = 0
                      ) -> AttentionContext:
    """Build the shared attention inputs once per pass. ``pad``: optional (B, L) bool, True at padding; ``bias``:
    optional (H, L, L) additive bias (relative positions); ``window > 0`` lets a query see keys at most that many
    positions away (sliding-window attention)."""
    allowed = attention_allowed(length, device, pad, causal, window) if pad is not None or window or (
        causal and bias is not None) else None
    mask = allowed
    if bias is not None:  # one float mask: the bias, -inf where a key may not be attended to
        mask = bias[None] if allowed is None else bias[None].masked_fill(~allowed, float("-inf"))
    rope = rope_angles(length, head_dim, device) if rotary else None
    return AttentionContext(mask=mask, is_causal=causal and mask is None, rope=rope)


def attention_allowed(length: int, device: torch.device, pad: torch.Tensor | None, causal: bool, window: int
                      ) -> torch.Tensor:
    """Boolean (B or 1, 1, L, L): True where query i may attend to key j (not padding, not the future when causal,
    within ``window`` when > 0). Every query may attend to itself, so a padding query whose window holds only
    padding still has a key (its output is never pooled, but a row of -inf would be NaN)."""
    pos = torch.arange(length, device=device)
    ok = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if pad is not None:
        ok = ok & ~pad[:, None, None, :]
    if causal:
        ok = ok & (pos[None, :] <= pos[:, None])
    if window:
        ok = ok & ((pos[None, :] - pos[:, None]).abs() <= window)
    return ok | torch.eye(length, dtype=torch.bool, device=device)


def position_blocks(width: int, depth: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> nn.ModuleList:
    """``depth`` :class:`PositionBlock`s."""
    return nn.ModuleList(PositionBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))


class RelativePositionBias(nn.Module):
    """A learned attention bias per head and relative offset (Shaw et al. 2018, arXiv:1803.02155; T5, Raffel et
    al. 2020, which shares one table across a stack's layers as here). Offsets beyond ``max_len - 1`` do not occur.

    Starting at zero, the bias for "the key one to the left" is a single number per head that every query's
    gradient moves, so attending to neighbours is learned in a few steps instead of being read off absolute
    positions.
    """

    def __init__(self, heads: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Parameter(torch.zeros(heads, 2 * max_len - 1))

    def forward(self, length: int) -> torch.Tensor:
        """(H, L, L): entry [h, i, j] is head h's bias for a query at i attending to a key at j."""
        pos = torch.arange(length, device=self.table.device)
        return self.table[:, pos[None, :] - pos[:, None] + self.max_len - 1]
