"""The two-tower model shared by the image–text objectives (CLIP, SigLIP).

The run's ``encoder`` is the **image tower** (any registered image encoder: the CNNs, ResNet-18, the ViT), so
it goes through k-NN, linear and 1%/10% like every image encoder. The text tower is a text encoder from the
same registry (``text_encoder``, default the bidirectional ``text_transformer``) over the dataset's BPE
tokenizer (the ``tokenizer@<dataset>`` stage). Each tower's pooled features are projected linearly (no
bias) to a shared ``embed_dim`` and L2-normalised; the subclass holds the learnable temperature (and bias)
and the loss.

``word_dropout`` is a text view: each time a training caption is drawn, each of its words is dropped with
that probability (whole words, at least one kept; ``modalities/image_text/feed.drop_words``). Short tag-like captions
then also appear as the one- or two-word phrases that zero-shot prompts are made of.

``lock_image: true`` is LiT (Zhai et al. 2022, arXiv:2111.07991): the image tower is frozen (its parameters
do not train and it runs in eval mode, so batch-norm statistics stay put) and only the text tower and both
projections learn. Start it from an encoder the pipeline already pretrained with ``init_image`` (a path to
an ``encoder.pt``, or ``run:<name>`` for a run of the same params file, resolved by the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import Objective, PairDataSpec, StepResult


def _pair_views() -> ImageViewConfig:
    # Light augmentation: the caption is the supervision; strong crops would cut away what it names.
    return ImageViewConfig(crop_scale=(0.7, 1.0), hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


@dataclass(frozen=True)
class ImageTextConfig:
    text_encoder: str = "text_transformer"
    text_encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"max_len": 32})
    embed_dim: int = 128
    lock_image: bool = False
    init_image: str = ""  # LiT: an encoder.pt (or run:<name>) to start the image tower from
    views: ImageViewConfig = field(default_factory=_pair_views)
    word_dropout: float = 0.0  # training captions lose each word with this probability (at least one stays)

    def __post_init__(self) -> None:
        from ssl_tasks.core.encoders import ENCODERS
        from ssl_tasks.core.errors import UserError

        if getattr(ENCODERS.get(self.text_encoder), "modality", "image") != "text":
            raise UserError(f"text_encoder {self.text_encoder!r} is not a text encoder")
        if self.embed_dim < 1:
            raise UserError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise UserError(f"word_dropout must be in [0, 1), got {self.word_dropout}")


class ImageTextObjective(Objective):
    """Base of the contrastive image–text objectives: ``(images, token rows)`` in, one aligned pair per row."""

    modalities: ClassVar[frozenset[str]] = frozenset({"image_text"})
    requires: ClassVar[frozenset[str]] = frozenset({"pooled"})
    encoder_modality: ClassVar[str | None] = "image"
    loss_name: ClassVar[str] = "contrastive_loss"

    def __init__(self, encoder: nn.Module, cfg: ImageTextConfig, data: PairDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        from ssl_tasks.modalities.text.encoders import build_text_encoder

        kwargs = {"max_len": data.text.seq_len, **cfg.text_encoder_kwargs}
        self.text_encoder = build_text_encoder(cfg.text_encoder, data.text.vocab_size, data.text.pad_id, **kwargs)
        self.image_proj = nn.Linear(encoder.out_dim, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_encoder.out_dim, cfg.embed_dim, bias=False)
        if cfg.init_image:
            state = torch.load(cfg.init_image, map_location="cpu", weights_only=True)
            encoder.load_state_dict(state)
        if cfg.lock_image:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> ImageTextObjective:
        super().train(mode)
        if self.cfg.lock_image:
            self.encoder.eval()  # a locked tower keeps its batch-norm statistics
        return self

    def make_views(self, x: Any, g: torch.Generator) -> list[torch.Tensor]:
        """``(uint8 images (B, C, H, W), int64 captions (B, L))`` -> [one normalised image view, the captions]."""
        images, captions = x
        return [self.view_fn(images, g), captions]

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, C, H, W) -> unit embeddings (B, E)."""
        return F.normalize(self.image_proj(self.encoder(images)), dim=-1)

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        """Token rows (B, L) -> unit embeddings (B, E)."""
        return F.normalize(self.text_proj(self.text_encoder(ids)), dim=-1)

    def loss(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Unit embeddings of B matching pairs -> (loss, report)."""
        raise NotImplementedError  # pragma: no cover

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        images, ids = views
        zi, zt = self.embed_images(images), self.embed_texts(ids)  # (B, E) each
        loss, report = self.loss(zi, zt)
        with torch.no_grad():
            sim = zi @ zt.T  # (B, B)
            report["pair_accuracy"] = float((sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean())
        # the monitors see the two towers' embeddings of the same pairs in the shared space
        return StepResult(loss=loss, terms={self.loss_name: loss.detach()}, report=report,
                          embeddings=(zi.detach(), zt.detach()))
