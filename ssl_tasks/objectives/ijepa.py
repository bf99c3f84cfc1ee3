"""I-JEPA: from one context block, predict the target encoder's features of several target blocks.

Assran et al. "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture",
CVPR 2023, arXiv:2301.08243. The context encoder (the online ViT) sees only the context patches; the
target encoder, an EMA of it, sees the whole image; a narrow predictor, told where each target block
is by mask tokens carrying its positions, regresses the layer-normed target features there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.blocks import transformer_blocks
from ssl_tasks.core.ema import frozen_copy
from ssl_tasks.losses.latent_prediction import LatentPredictionLoss
from ssl_tasks.modalities.image.masking import block_masks
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.modalities.image.vit import sincos_2d
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


def _ijepa_views() -> ImageViewConfig:
    """The paper uses no hand-crafted augmentation beyond a random resized crop (scale 0.3-1)."""
    return ImageViewConfig(crop_scale=(0.3, 1.0), hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


@dataclass(frozen=True)
class IJEPAConfig:
    """Paper: 4 targets of scale 0.15-0.2 and aspect 0.75-1.5, context scale 0.85-1, at least 4 context
    patches; EMA momentum 0.996 rising linearly to 1; predictor 384 wide and 12 deep.

    The predictor defaults smaller here (64 wide, 4 deep) to suit small encoders. Evaluate with
    ``pool: mean`` on the ViT, as the paper does (average-pooled patch tokens): I-JEPA trains no [CLS].
    """

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_ratio: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_context: int = 4
    base_momentum: float = 0.996
    pred_width: int = 64
    pred_depth: int = 4
    pred_heads: int = 4
    loss: Literal["mse", "smooth_l1"] = "mse"
    views: ImageViewConfig = field(default_factory=_ijepa_views)

    def __post_init__(self) -> None:
        if not 0 <= self.base_momentum <= 1:
            raise ValueError(f"base_momentum must be in [0, 1], got {self.base_momentum}")
        for name in ("target_scale", "context_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        if not 0 < self.target_ratio[0] <= self.target_ratio[1]:
            raise ValueError(f"target_ratio must satisfy 0 < lo <= hi, got {self.target_ratio}")
        if self.num_targets < 1 or self.min_context < 1:
            raise ValueError(f"num_targets and min_context must be >= 1, got {self.num_targets}, {self.min_context}")
        if self.pred_depth < 1 or self.pred_width % self.pred_heads or self.pred_width % 4:
            raise ValueError("pred_depth must be >= 1 and pred_width a multiple of 4 and of pred_heads, "
                             f"got {self.pred_depth}, {self.pred_width}, {self.pred_heads}")


class JEPAPredictor(nn.Module):
    """Context tokens + one block of positioned mask tokens -> predicted features at that block, per block."""

    def __init__(self, enc_width: int, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Linear(enc_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = transformer_blocks(width, depth, heads, mlp_ratio=4.0)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, enc_width)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, h: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """h: (B, N_ctx, D) context features at patch indices ctx (B, N_ctx); tgt: (B, M, N_tgt) -> (B, M, N_tgt, D)."""
        b, m, nt = tgt.shape
        pos = sincos_2d(gh, gw, self.width, h.device).to(h.dtype)  # (N, Dp)
        c = self.embed(h) + pos[ctx]  # (B, N_ctx, Dp)
        c = c.repeat_interleave(m, dim=0)  # (B*M, N_ctx, Dp), block-major within each sample
        q = self.mask_token.to(c.dtype) + pos[tgt.reshape(b * m, nt)]  # (B*M, N_tgt, Dp)
        y = torch.cat([c, q], dim=1)  # (B*M, N_ctx + N_tgt, Dp)
        for blk in self.blocks:
            y = blk(y)
        p = self.proj(self.norm(y[:, -nt:]))  # (B*M, N_tgt, D)
        return p.view(b, m, nt, -1)  # (B, M, N_tgt, D)


@OBJECTIVES.register("ijepa")
class IJEPA(Objective):
    """Needs a token encoder (``ViT``); the target encoder is the one kept for evaluation."""

    Config = IJEPAConfig
    requires = frozenset({"pooled", "tokens"})

    def __init__(self, encoder: nn.Module, cfg: IJEPAConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.grid = data.image_size // encoder.patch_size
        if self.grid < 2:
            raise ValueError(f"I-JEPA needs a patch grid of at least 2x2, got {self.grid}x{self.grid}")
        self.predictor = JEPAPredictor(encoder.out_dim, cfg.pred_width, cfg.pred_depth, cfg.pred_heads)
        self.target_encoder = frozen_copy(encoder)
        self.criterion = LatentPredictionLoss(cfg.loss)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> [view (B, C, S, S), context (B, N_ctx), targets (B, M, N_tgt)] patch indices."""
        v = self.view_fn(x, g)
        c = self.cfg
        ctx, tgt = block_masks(v.shape[0], self.grid, self.grid, g, num_targets=c.num_targets,
                               target_scale=c.target_scale, target_ratio=c.target_ratio,
                               context_scale=c.context_scale, min_context=c.min_context)
        return [v, ctx, tgt]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: as ``make_views`` returns; the loss compares predictions with target features per block."""
        x, ctx, tgt = views
        b, m, nt = tgt.shape
        with torch.no_grad():
            t = self.target_encoder.forward_tokens(x)  # (B, 1 + N, D)
            s = F.layer_norm(t[:, 1:], t.shape[-1:])  # (B, N, D)
            s_tgt = torch.gather(s, 1, tgt.reshape(b, m * nt, 1).expand(-1, -1, s.shape[-1]))  # (B, M*N_tgt, D)
        z = self.encoder.forward_tokens(x, ctx)  # (B, 1 + N_ctx, D)
        p = self.predictor(z[:, 1:], ctx, tgt, self.grid, self.grid)  # (B, M, N_tgt, D)
        loss = self.criterion(p, s_tgt.view(b, m, nt, -1))
        h1, h2 = self.encoder.pooled(z).detach(), self.target_encoder.pooled(t)  # (B, D) each
        return StepResult(loss=loss, terms={"prediction_loss": loss.detach()}, embeddings=(h1, h2))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder)]

    def momentum(self, progress: float) -> float:
        """The paper's linear schedule: base momentum at the start, 1.0 at the end."""
        progress = min(max(progress, 0.0), 1.0)
        return self.cfg.base_momentum + (1 - self.cfg.base_momentum) * progress

    @property
    def eval_encoder(self) -> nn.Module:
        return self.target_encoder
