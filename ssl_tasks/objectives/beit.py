"""BEiT: mask blocks of patches and predict, at each masked position, the frozen tokenizer's visual token.

Bao et al. "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022, arXiv:2106.08254.

The paper's tokenizer is DALL-E's dVAE; here it is k-means over normalised patches, fitted on the
run's own data by a pipeline stage (``ssl_tasks.modalities.image.visual_tokenizer``; the module
docstring says why). It is loaded once, held as a buffer-only submodule and never trained: it has
no parameters, so no optimizer or EMA can touch it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_tasks.losses.masked_token_ce import MaskedTokenCrossEntropy
from ssl_tasks.modalities.image.block_masking import block_mask
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.modalities.image.visual_tokenizer import PatchTokenizer
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult


def _beit_views() -> ImageViewConfig:
    """The paper's augmentations: random resized crop, horizontal flip and colour jitter (no grayscale)."""
    return ImageViewConfig(grayscale_p=0.0)


@dataclass(frozen=True)
class BEiTConfig:
    """Paper: 40% of the patches masked blockwise, blocks of at least 16 patches (of a 14 x 14 grid).

    ``tokenizer`` (required) is the path of a tokenizer file written by
    ``visual_tokenizer.train_tokenizer``, fitted with the encoder's patch size on data with the
    run's channel count; the number of codes K is read from it.
    """

    tokenizer: str = ""
    mask_ratio: float = 0.4
    min_block: int = 16
    views: ImageViewConfig = field(default_factory=_beit_views)

    def __post_init__(self) -> None:
        if not self.tokenizer:
            raise ValueError("tokenizer is required: the path of a tokenizer file written by "
                             "ssl_tasks.modalities.image.visual_tokenizer.train_tokenizer (the tokenizer stage)")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.min_block < 1:
            raise ValueError(f"min_block must be >= 1, got {self.min_block}")


@OBJECTIVES.register("beit")
class BEiT(Objective):
    """Needs a token encoder (``ViT``): the whole sequence, mask tokens included, goes through it."""

    Config = BEiTConfig
    requires = frozenset({"pooled", "tokens"})
    needs_tokenizer = True

    def __init__(self, encoder: nn.Module, cfg: BEiTConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.patch_size: int = encoder.patch_size
        self.grid = data.image_size // self.patch_size
        self.tokenizer = PatchTokenizer.load(cfg.tokenizer, patch_size=self.patch_size, channels=data.channels)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.out_dim))
        self.head = nn.Linear(encoder.out_dim, self.tokenizer.num_codes)
        self.criterion = MaskedTokenCrossEntropy()
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> [view (B, C, S, S), mask (B, N), mask2 (B, N)], masks bool, True = masked.

        ``mask`` drives the loss; ``mask2``, a second independent mask of the same view, only feeds the
        collapse monitors.
        """
        v = self.view_fn(x, g)
        b, cfg = v.shape[0], self.cfg
        mask = block_mask(b, self.grid, self.grid, cfg.mask_ratio, g, cfg.min_block)
        mask2 = block_mask(b, self.grid, self.grid, cfg.mask_ratio, g, cfg.min_block)
        return [v, mask, mask2]

    def encode_masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S), (B, N) bool -> (B, 1 + N, D): masked patch embeddings become the mask token, then positions."""
        t = self.encoder.patch_tokens(x)  # (B, N, D)
        t = torch.where(mask.unsqueeze(-1), self.mask_token.to(t.dtype), t)  # (B, N, D)
        t = t + self.encoder.pos_embed(self.grid, self.grid, x.device).to(t.dtype)  # (B, N, D)
        return self.encoder.encode(t)

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised view (B, C, S, S) -> (B, N) token ids: the frozen tokenizer reads pixels in [0, 1]."""
        c = x.shape[1]
        mean = self.view_fn.mean.to(x.device, torch.float32).view(1, c, 1, 1)
        std = self.view_fn.std.to(x.device, torch.float32).view(1, c, 1, 1)
        return self.tokenizer(x.float() * std + mean)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: as ``make_views`` returns; the loss is the token cross-entropy on the masked positions."""
        x, mask, mask2 = views
        target = self.targets(x)  # (B, N)
        z = self.encode_masked(x, mask)  # (B, 1 + N, D)
        logits = self.head(z[:, 1:])  # (B, N, K)
        loss = self.criterion(logits, target, mask)
        with torch.no_grad():
            acc = (logits.argmax(dim=-1) == target)[mask].float().mean()  # masked-token accuracy
            h2 = self.encoder.pooled(self.encode_masked(x, mask2)) if self.monitoring else None  # (B, D)
        h1 = self.encoder.pooled(z).detach()  # (B, D)
        return StepResult(loss=loss, terms={"mim_loss": loss.detach()}, report={"pretext_acc": float(acc)},
                          embeddings=(h1, h2) if h2 is not None else None)
