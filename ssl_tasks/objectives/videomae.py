"""VideoMAE: tube-mask most space-time tubelets, encode the visible rest, reconstruct the masked pixels.

Tong, Song, Wang, Wang. "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video
Pre-Training", NeurIPS 2022, arXiv:2203.12602. As in the paper:

* tube masking at a high ratio (0.9; ``modalities/video/masking.py``): one spatial mask per clip, repeated over
  time, so a masked tubelet cannot be copied from the next frame;
* the encoder (``video_vit``) sees only the visible tubelets; a light decoder fills in mask tokens, adds the
  3-D positions and predicts every tubelet's pixels;
* the loss is the MSE on masked tubelets, with each target tubelet normalised by its own mean and (unbiased)
  variance (``norm_pix``). The reference un-normalises its input with the ImageNet statistics, which assumes 3
  channels, and normalises each channel of a tubelet separately; here the target is the clip's raw [0, 1] pixels
  (the view un-normalised with the data's own statistics, rounded back to the uint8 grid, so it is exact for any
  channel count), normalised over all ``tubelet * p * p * C`` values of a tubelet, like MAE (He et al. 2022).

On mostly empty frames (a sprite on a black background) most tubelets are background, whose target is all zero:
the loss is dominated by predicting "nothing here". ``foreground_loss`` reports the same MSE over the masked
tubelets that contain a non-background pixel (raw max > 0), and the report ``masked_foreground_fraction`` how
many there are. Judge the method by the probes, not by reconstructions.

No augmentation by default: a horizontal flip mirrors the motion that the direction probes read, and the paper's
multi-scale crop matters little on 32 x 32 frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.video.encoders import sincos_3d
from ssl_tasks.modalities.video.masking import tube_masking, tubelet_patchify
from ssl_tasks.modalities.video.spec import VideoDataSpec
from ssl_tasks.objectives.base import OBJECTIVES, Objective, StepResult
from ssl_tasks.objectives.mae import MaskedAutoencoderConfig, MaskedDecoder


@dataclass(frozen=True)
class VideoMAEConfig(MaskedAutoencoderConfig):
    """Paper: mask ratio 0.9 (0.75 on small data sets such as UCF101 is close), decoder 384 wide and 4 blocks deep
    (6 heads) for ViT-B, normalised-pixel targets. The decoder defaults smaller here (64 wide, 2 blocks) to suit
    small encoders; only the encoder is kept. The fields are MAE's (``MaskedAutoencoderConfig``) but ``views``."""

    mask_ratio: float = 0.9

    def check_decoder(self) -> None:
        if self.decoder_depth < 1 or self.decoder_width % self.decoder_heads or self.decoder_width % 2 \
                or self.decoder_width < 6:
            raise ValueError("decoder_depth must be >= 1 and decoder_width even, >= 6 and a multiple of "
                             f"decoder_heads, got {self.decoder_depth}, {self.decoder_width}, {self.decoder_heads}")


class ReconstructionTerms(NamedTuple):
    loss: torch.Tensor  # MSE over the masked tubelets
    foreground_loss: torch.Tensor  # MSE over the masked tubelets with a non-background pixel; 0 when there are none
    foreground: torch.Tensor  # (B, N) bool: masked and not all background


class TubeletReconstructionLoss(nn.Module):
    """Per-tubelet MSE averaged over the masked tubelets; visible tubelets contribute nothing.

    ``target`` holds the raw pixels in [0, 1]; with ``norm_pix`` each target tubelet becomes
    ``(t - mean) / sqrt(var + eps)`` over its own values (unbiased variance). A tubelet is foreground when its
    raw maximum exceeds ``background`` (half a uint8 step above 0 by default).
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6, background: float = 0.5 / 255) -> None:
        super().__init__()
        self.norm_pix, self.eps, self.background = norm_pix, eps, background

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> ReconstructionTerms:
        """pred, target: (B, N, P) tubelets (P = tubelet*p*p*C); mask: (B, N) bool, True = masked."""
        if not bool(mask.any()):
            raise ValueError("mask selects no tubelet: the loss is undefined")
        target = target.detach().float()
        foreground = mask & (target.amax(dim=-1) > self.background)  # (B, N)
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
            var = target.var(dim=-1, keepdim=True)  # (B, N, 1)
            target = (target - mean) / (var + self.eps).sqrt()
        per_tubelet = (pred.float() - target).pow(2).mean(dim=-1)  # (B, N)
        m, f = mask.to(per_tubelet.dtype), foreground.to(per_tubelet.dtype)
        loss = (per_tubelet * m).sum() / m.sum()
        fg_loss = (per_tubelet * f).sum() / f.sum().clamp_min(1.0)  # 0, not NaN, when nothing is foreground
        return ReconstructionTerms(loss, fg_loss, foreground)


class VideoMAEDecoder(MaskedDecoder):
    """Visible tokens + [CLS] -> pixels of every tubelet (MAE's decoder, ``MaskedDecoder``), with 3-D sin-cos
    positions."""

    def positions(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return sincos_3d(*grid, self.width, device)

    def forward(self, z: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """z: (B, 1 + N_keep, D) encoder output, keep: (B, N_keep), grid (gt, gh, gw) -> (B, N, P) tubelets."""
        return self.decode(z, keep, grid)


@OBJECTIVES.register("videomae")
class VideoMAE(Objective):
    """Needs a tubelet token encoder (``video_vit``): the encoder sees only the visible tubelets."""

    Config = VideoMAEConfig
    modalities: ClassVar[frozenset[str]] = frozenset({"video"})
    requires: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens"})

    def __init__(self, encoder: nn.Module, cfg: VideoMAEConfig, data: VideoDataSpec) -> None:
        self.check_data(data)
        super().__init__(encoder, cfg, data)
        self.tubelet: int = encoder.tubelet
        self.patch_size: int = encoder.patch_size
        if data.frames % self.tubelet or data.height % self.patch_size or data.width % self.patch_size:
            raise UserError(f"videomae: clips of {data.frames} x {data.height} x {data.width} do not split into "
                            f"{self.tubelet} x {self.patch_size} x {self.patch_size} tubelets")
        self.grid = (data.frames // self.tubelet, data.height // self.patch_size, data.width // self.patch_size)
        c = data.channels
        self.register_buffer("mean", torch.tensor(data.mean, dtype=torch.float32).view(1, 1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data.std, dtype=torch.float32).view(1, 1, c, 1, 1), persistent=False)
        self.decoder = VideoMAEDecoder(encoder.out_dim, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads,
                                       cfg.decoder_mlp_ratio, self.tubelet * self.patch_size**2 * c)
        self.criterion = TubeletReconstructionLoss(norm_pix=cfg.norm_pix)

    @classmethod
    def check_data(cls, data: VideoDataSpec) -> None:
        if not isinstance(data, VideoDataSpec):
            raise UserError(f"{cls.__name__} trains on video data, got {type(data).__name__}")

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, T, C, H, W) -> [clip (B, T, C, H, W) float normalised, keep (B, N_keep), mask (B, N),
        keep2 (B, N_keep)].

        ``keep``/``mask`` drive the reconstruction; ``keep2``, a second independent tube mask of the same clip,
        only feeds the collapse monitors.
        """
        x = torch.as_tensor(x)
        if x.ndim != 5 or x.shape[2] != self.data.channels:
            raise ValueError(f"videomae takes uint8 (B, T, C={self.data.channels}, H, W) clips, got {tuple(x.shape)}")
        v = (x.to(self.mean.device, torch.float32) / 255.0 - self.mean) / self.std  # (B, T, C, H, W)
        keep, mask = tube_masking(v.shape[0], *self.grid, self.cfg.mask_ratio, g)
        keep2, _ = tube_masking(v.shape[0], *self.grid, self.cfg.mask_ratio, g)
        return [v, keep, mask, keep2]

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised clip (B, T, C, H, W) -> its raw pixels in [0, 1], exactly (back on the uint8 grid)."""
        return ((x.float() * self.std + self.mean) * 255.0).round().clamp(0, 255) / 255.0

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: as ``make_views`` returns; the loss is the MSE on the masked tubelets of the clip."""
        x, keep, mask, keep2 = views
        z = self.encoder.forward_tokens(x, keep)  # (B, 1 + N_keep, D)
        pred = self.decoder(z, keep, self.grid)  # (B, N, P)
        target = tubelet_patchify(self.pixels(x), self.tubelet, self.patch_size)  # (B, N, P) raw [0, 1]
        out = self.criterion(pred, target, mask)
        terms = {"reconstruction_loss": out.loss.detach(), "foreground_loss": out.foreground_loss.detach()}
        report = {"masked_foreground_fraction": float(out.foreground.sum() / mask.sum())}
        if not self.monitoring:  # the second mask only feeds the collapse monitors
            return StepResult(loss=out.loss, terms=terms, report=report)
        with torch.no_grad():
            h2 = self.encoder.pooled(self.encoder.forward_tokens(x, keep2))  # (B, D)
        h1 = self.encoder.pooled(z).detach()  # (B, D)
        return StepResult(loss=out.loss, terms=terms, report=report, embeddings=(h1, h2))
