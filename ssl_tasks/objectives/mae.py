"""MAE: mask most patches, encode the visible rest, and reconstruct the masked pixels with a light decoder.

He et al. "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, arXiv:2111.06377.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.core.blocks import transformer_blocks
from ssl_tasks.losses.masked_reconstruction import MaskedReconstructionLoss
from ssl_tasks.modalities.image.masking import patchify, random_masking
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.modalities.image.vit import sincos_2d
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


def _mae_views() -> ImageViewConfig:
    """The paper's only augmentation: random resized crop (scale 0.2-1) and horizontal flip."""
    return ImageViewConfig(crop_scale=(0.2, 1.0), hflip_p=0.5, jitter_p=0.0, grayscale_p=0.0)


@dataclass(frozen=True)
class MaskedAutoencoderConfig:
    """The fields MAE and VideoMAE share, in this order: the mask ratio, the light decoder (only the encoder is
    kept) and normalised-pixel targets. Subclasses set ``mask_ratio``'s default and check the decoder's width
    against their position tables (``check_decoder``)."""

    mask_ratio: float = 0.75
    decoder_width: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_ratio: float = 4.0
    norm_pix: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        self.check_decoder()

    def check_decoder(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class MAEConfig(MaskedAutoencoderConfig):
    """Paper: mask ratio 0.75, decoder 512 wide and 8 blocks deep (16 heads), normalised-pixel targets.

    The decoder defaults smaller here (64 wide, 2 blocks) to suit small encoders; it must stay light,
    since only the encoder is kept.
    """

    views: ImageViewConfig = field(default_factory=_mae_views)

    def check_decoder(self) -> None:
        if self.decoder_depth < 1 or self.decoder_width % self.decoder_heads or self.decoder_width % 4:
            raise ValueError("decoder_depth must be >= 1 and decoder_width a multiple of 4 and of decoder_heads, "
                             f"got {self.decoder_depth}, {self.decoder_width}, {self.decoder_heads}")


class MaskedDecoder(nn.Module):
    """MAE's and VideoMAE's light decoder: visible tokens + [CLS] -> the target of every token (a patch's or a
    tubelet's pixels): embed, fill in mask tokens, add the fixed positions of the grid (``positions``, which a
    subclass defines), blocks, final norm, linear head."""

    def __init__(self, enc_width: int, width: int, depth: int, heads: int, mlp_ratio: float, patch_dim: int) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Linear(enc_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = transformer_blocks(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def positions(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """(N, width) fixed positions of the token grid."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, keep: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """z: (B, 1 + N_keep, D) encoder output, keep: (B, N_keep), grid of N tokens -> (B, N, P) predictions."""
        y = self.embed(z)  # (B, 1 + N_keep, Dd)
        b, n = y.shape[0], math.prod(grid)
        full = self.mask_token.expand(b, n, -1).to(y.dtype)  # (B, N, Dd)
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, self.width), y[:, 1:])  # (B, N, Dd)
        full = full + self.positions(grid, y.device).to(y.dtype)  # (B, N, Dd)
        y = torch.cat([y[:, :1], full], dim=1)  # (B, 1 + N, Dd)
        for blk in self.blocks:
            y = blk(y)
        return self.head(self.norm(y)[:, 1:])  # (B, N, P)


class MAEDecoder(MaskedDecoder):
    """Visible tokens + [CLS] -> pixels of every patch, with 2-D sin-cos positions."""

    def positions(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return sincos_2d(*grid, self.width, device)

    def forward(self, z: torch.Tensor, keep: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """z: (B, 1 + N_keep, D) encoder output, keep: (B, N_keep) -> (B, N, P) predicted patches."""
        return self.decode(z, keep, (gh, gw))


@OBJECTIVES.register("mae")
class MAE(Objective):
    """Needs a token encoder (``ViT``): the encoder sees only the visible patches."""

    Config = MAEConfig
    requires = frozenset({"pooled", "tokens"})

    def __init__(self, encoder: nn.Module, cfg: MAEConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.patch_size: int = encoder.patch_size
        self.grid = data.image_size // self.patch_size
        random_masking(1, self.grid**2, cfg.mask_ratio, torch.Generator())  # fails early if nothing stays visible
        self.decoder = MAEDecoder(encoder.out_dim, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads,
                                  cfg.decoder_mlp_ratio, self.patch_size**2 * data.channels)
        self.criterion = MaskedReconstructionLoss(norm_pix=cfg.norm_pix)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> [view (B, C, S, S), keep (B, N_keep), mask (B, N), keep2 (B, N_keep)].

        ``keep``/``mask`` drive the reconstruction; ``keep2``, a second independent mask of the same view,
        only feeds the collapse monitors.
        """
        v = self.view_fn(x, g)
        b, n = v.shape[0], self.grid**2
        keep, mask = random_masking(b, n, self.cfg.mask_ratio, g)
        keep2, _ = random_masking(b, n, self.cfg.mask_ratio, g)
        return [v, keep, mask, keep2]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: as ``make_views`` returns; the loss is the MSE on the masked patches of the view."""
        x, keep, mask, keep2 = views
        z = self.encoder.forward_tokens(x, keep)  # (B, 1 + N_keep, D)
        pred = self.decoder(z, keep, self.grid, self.grid)  # (B, N, P)
        loss = self.criterion(pred, patchify(x, self.patch_size), mask)
        if not self.monitoring:  # the second mask only feeds the collapse monitors
            return StepResult(loss=loss, terms={"reconstruction_loss": loss.detach()})
        with torch.no_grad():
            h2 = self.encoder.pooled(self.encoder.forward_tokens(x, keep2))  # (B, D)
        h1 = self.encoder.pooled(z).detach()  # (B, D)
        return StepResult(loss=loss, terms={"reconstruction_loss": loss.detach()}, embeddings=(h1, h2))
