"""Small text transformers: bidirectional encoder (BERT), causal decoder (GPT) and encoder-decoder (T5).

All three share the token embedding, learned positions and pre-norm blocks (``core.blocks``), take int64
token ids (B, L) with ``[PAD]`` marking padding, and like every registry encoder return pooled features
(B, D): the mean of the final hidden states over non-pad tokens (``pooling: first_last``: of their average
with the input embeddings), which is what k-NN, the linear probe and fine-tuning see. ``forward_tokens`` gives
the per-token states the objectives build on; pooling does not change training.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.blocks import (
    PositionDecoderBlock,
    RelativePositionBias,
    attention_context,
    position_blocks,
    transformer_blocks,
)
from ssl_tasks.core.encoders import ENCODERS, Encoder

POSITIONS = ("learned", "rope", "relative")  # absolute table; rotary; learned bias per relative offset
POOLINGS = ("last", "first_last")  # mean of the final states; mean of (embeddings + final states) / 2


class _TextTransformer(Encoder):
    modality: ClassVar[str] = "text"
    causal: ClassVar[bool] = False

    def __init__(self, vocab_size: int, pad_id: int, max_len: int = 64, width: int = 128, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.1, position: str = "learned",
                 window: int = 0, embed_norm: bool = False, pooling: str = "last") -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; valid: {', '.join(POSITIONS)}")
        if not isinstance(window, int) or window < 0:
            raise ValueError(f"window must be an int >= 0 (0: every token sees the whole row), got {window!r}")
        if window and position == "learned":
            raise ValueError("window (sliding-window attention) needs position 'rope' or 'relative'")
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not isinstance(embed_norm, bool):
            raise TypeError(f"embed_norm must be true or false, got {embed_norm!r}")
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3, got {max_len}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        self.vocab_size, self.pad_id, self.max_len, self.width = vocab_size, pad_id, max_len, width
        self.position, self.window, self.heads, self.pooling = position, window, heads, pooling
        self.tok_embed = nn.Embedding(vocab_size, width)
        self.drop = nn.Dropout(dropout)
        self.rel_bias = RelativePositionBias(heads, max_len) if position == "relative" else None
        if position in ("rope", "relative"):  # positions enter through the attention: no absolute table
            self.pos_embed = None
            self.blocks = position_blocks(width, depth, heads, mlp_ratio, dropout)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, max_len, width))
            self.blocks = transformer_blocks(width, depth, heads, mlp_ratio, dropout)
            nn.init.normal_(self.pos_embed, std=0.02)
        # BERT's LayerNorm on the embeddings: token identity enters the residual stream at the blocks' scale
        # (~sqrt(width)) rather than at the table's (std 0.02), where the first block's output drowns it
        self.embed_norm = nn.LayerNorm(width) if embed_norm else None
        self.norm = nn.LayerNorm(width)
        self.out_dim = width
        nn.init.normal_(self.tok_embed.weight, std=0.02)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) token + position embeddings (after dropout)."""
        if ids.shape[1] > self.max_len:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds the encoder's max_len {self.max_len}")
        return self._embed(ids, self.pos_embed, self.embed_norm)

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor | None, norm: nn.Module | None) -> torch.Tensor:
        """Shared token table + an optional position table and embedding norm, then dropout (encoder and decoder)."""
        return self.drop(self._embed_clean(ids, pos, norm))

    def _embed_clean(self, ids: torch.Tensor, pos: torch.Tensor | None, norm: nn.Module | None) -> torch.Tensor:
        z = self.tok_embed(ids)
        z = z if pos is None else z + pos[:, : ids.shape[1]]
        return z if norm is None else norm(z)

    def run_blocks(self, z: torch.Tensor, pad: torch.Tensor | None, causal: bool) -> torch.Tensor:
        if self.pos_embed is None:
            pad = pad if pad is not None and pad.any() else None
            bias = self.rel_bias(z.shape[1]) if self.rel_bias is not None else None
            ctx = attention_context(z.shape[1], self.width // self.heads, z.device, pad, causal, bias=bias,
                                    rotary=self.position == "rope", window=self.window)
            for blk in self.blocks:
                z = blk(z, ctx)
            return self.norm(z)
        mask = nn.Transformer.generate_square_subsequent_mask(z.shape[1], device=z.device, dtype=z.dtype) \
            if causal else None
        if pad is not None and not pad.any():
            pad = None
        if pad is not None and mask is not None:  # one float mask: PyTorch's fast path wants matching kinds
            pad = torch.zeros(pad.shape, dtype=z.dtype, device=z.device).masked_fill(pad, float("-inf"))
        for blk in self.blocks:
            z = blk(z, src_mask=mask, src_key_padding_mask=pad, is_causal=causal)
        return self.norm(z)

    def forward_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) final hidden states (causal attention for the decoder-only model)."""
        return self.run_blocks(self.embed(ids), ids == self.pad_id, self.causal)

    def pool(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, L, D) final states of (B, L) ids -> (B, D): mean over non-pad tokens. With ``pooling: first_last``
        each token is first averaged with its input embedding (after ``embed_norm``, without dropout): the
        "first-last average" of the sentence-embedding literature (BERT-whitening, Su et al. 2021,
        arXiv:2103.15316; a baseline in SimCSE), with the embedding layer as the first."""
        if self.pooling == "first_last":
            h = (h + self._embed_clean(ids, self.pos_embed, self.embed_norm)) / 2
        keep = (ids != self.pad_id).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 ids -> (B, D)"""
        return self.pool(self.forward_tokens(ids), ids)

    def lm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states -> (..., V) logits through the tied token embedding."""
        return h @ self.tok_embed.weight.T


@ENCODERS.register("text_transformer")
class TextTransformer(_TextTransformer):
    """Bidirectional encoder (BERT-style; Devlin et al. 2019, arXiv:1810.04805)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens", "bidirectional"})


@ENCODERS.register("causal_transformer")
class CausalTransformer(_TextTransformer):
    """Decoder-only model with causal self-attention (GPT; Radford et al. 2018): token t sees tokens <= t."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens", "causal"})
    causal: ClassVar[bool] = True


@ENCODERS.register("seq2seq_transformer")
class Seq2SeqTransformer(_TextTransformer):
    """Encoder-decoder (T5; Raffel et al. 2020, arXiv:1910.10683): the bidirectional encoder above plus a causal
    decoder with cross-attention, sharing the token embedding and LM head. Pooled features come from the encoder.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens", "bidirectional", "seq2seq"})

    def __init__(self, vocab_size: int, pad_id: int, max_len: int = 64, width: int = 128, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.1, decoder_depth: int | None = None,
                 position: str = "learned", window: int = 0, embed_norm: bool = False,
                 pooling: str = "last") -> None:
        super().__init__(vocab_size, pad_id, max_len, width, depth, heads, mlp_ratio, dropout, position, window,
                         embed_norm, pooling)
        n_dec = depth if decoder_depth is None else decoder_depth
        if self.pos_embed is None:  # rope / relative: the decoder's self-attention sees offsets too (no window)
            self.dec_pos_embed = None
            self.dec_rel_bias = RelativePositionBias(heads, max_len) if position == "relative" else None
            self.dec_blocks = nn.ModuleList(PositionDecoderBlock(width, heads, mlp_ratio, dropout)
                                            for _ in range(n_dec))
        else:
            self.dec_pos_embed = nn.Parameter(torch.zeros(1, max_len, width))
            self.dec_blocks = nn.ModuleList(
                nn.TransformerDecoderLayer(width, heads, int(width * mlp_ratio), dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
                for _ in range(n_dec)
            )
            nn.init.normal_(self.dec_pos_embed, std=0.02)
        self.dec_embed_norm = nn.LayerNorm(width) if embed_norm else None
        self.dec_norm = nn.LayerNorm(width)

    def decode(self, dec_ids: torch.Tensor, memory: torch.Tensor, memory_ids: torch.Tensor) -> torch.Tensor:
        """Decoder inputs (B, T), encoder states (B, L, D) of ``memory_ids`` (B, L) -> (B, T, D)."""
        if dec_ids.shape[1] > self.max_len:
            raise ValueError(f"decoder sequence of {dec_ids.shape[1]} tokens exceeds max_len {self.max_len}")
        mem_pad = memory_ids == self.pad_id
        t = dec_ids.shape[1]
        z = self._embed(dec_ids, self.dec_pos_embed, self.dec_embed_norm)
        if self.dec_pos_embed is None:
            dec_pad = dec_ids == self.pad_id
            bias = self.dec_rel_bias(t) if self.dec_rel_bias is not None else None
            ctx = attention_context(t, self.width // self.heads, z.device, dec_pad if dec_pad.any() else None,
                                    causal=True, bias=bias, rotary=self.position == "rope")
            for blk in self.dec_blocks:
                z = blk(z, ctx, memory, mem_pad if mem_pad.any() else None)
            return self.dec_norm(z)
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=z.device, dtype=z.dtype)
        dec_pad = torch.zeros(dec_ids.shape, dtype=z.dtype, device=z.device).masked_fill(
            dec_ids == self.pad_id, float("-inf"))
        for blk in self.dec_blocks:
            z = blk(z, memory, tgt_mask=causal, tgt_key_padding_mask=dec_pad, memory_key_padding_mask=mem_pad,
                    tgt_is_causal=True)
        return self.dec_norm(z)


def build_text_encoder(name: str, vocab_size: int, pad_id: int, **kwargs: object) -> Encoder:
    cls = ENCODERS.get(name)
    if getattr(cls, "modality", "image") != "text":
        from ssl_tasks.core.errors import UserError

        raise UserError(f"encoder {name!r} is not a text encoder; text encoders: {', '.join(text_encoder_names())}")
    try:
        return cls(vocab_size=vocab_size, pad_id=pad_id, **kwargs)
    except (TypeError, ValueError) as e:
        from ssl_tasks.core.errors import UserError

        raise UserError(f"encoder {name!r}: {e}") from None


def text_encoder_names() -> list[str]:
    return [n for n in ENCODERS.names() if getattr(ENCODERS.get(n), "modality", "image") == "text"]
