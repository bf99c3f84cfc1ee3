"""Transformer blocks shared by every modality's encoders, decoders and predictors."""

from __future__ import annotations

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
