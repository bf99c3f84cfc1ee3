"""The objective interface: encoder in, views + heads + loss inside, one typed step result out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ssl_tasks.core.registry import Registry
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


@dataclass(frozen=True)
class DataSpec:
    """What an objective needs to know about the data: shape and normalisation statistics."""

    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class TextDataSpec:
    """What a text objective needs to know: the tokenizer's vocabulary and special ids, the row length."""

    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    sentinel_ids: tuple[int, ...]
    special_ids: tuple[int, ...]
    seq_len: int


@dataclass(frozen=True)
class PairDataSpec:
    """What an image–text objective needs: the image side's spec and the caption tokenizer's."""

    image: DataSpec
    text: TextDataSpec


@dataclass
class StepResult:
    """One training step: the scalar to minimise, its named terms and detached reports.

    ``embeddings`` holds detached encoder features of two views of the same samples,
    (B, D) each, for the collapse monitors; ``projections`` optionally the projector's outputs of the
    same two views, (B, P) each: a projector can collapse while the encoder features still vary.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    report: dict[str, float] = field(default_factory=dict)
    embeddings: tuple[torch.Tensor, torch.Tensor] | None = None
    projections: tuple[torch.Tensor, torch.Tensor] | None = None


class Objective(nn.Module):
    """Base for SSL objectives; subclasses set ``Config`` and implement ``forward``.

    Objectives never see labels: ``make_views`` and ``forward`` receive images only.
    """

    Config: ClassVar[type]
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    requires: ClassVar[frozenset[str]] = frozenset({"pooled"})
    # the modality of the ``encoder`` it is built with; None: the data modality (image_text objectives: "image")
    encoder_modality: ClassVar[str | None] = None
    # True: the objective's ``tokenizer`` kwarg is filled by the pipeline with its dataset's tokenizer stage output
    needs_tokenizer: ClassVar[bool] = False

    def __init__(self, encoder: nn.Module, cfg: Any, data: DataSpec | TextDataSpec | PairDataSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.data = data
        self.progress = 0.0  # training progress in [0, 1], set by the loop before every step (schedules read it)
        # False once the loop has this epoch's monitor samples: extra forward passes made only for
        # ``embeddings`` (MAE's and BEiT's second mask) may then be skipped, returning ``embeddings=None``
        self.monitoring = True
        self.encoder = encoder
        image = data.image if isinstance(data, PairDataSpec) else data
        if isinstance(image, DataSpec):  # image objectives: their views' crop / jitter / flip settings
            view_cfg: ImageViewConfig = cfg.views
            self.view_fn = ImageViews(view_cfg, torch.tensor(image.mean), torch.tensor(image.std), image.image_size)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) images (int64 (B, L) token ids for text) -> V views; two normalised crops by default."""
        return [self.view_fn(x, g), self.view_fn(x, g)]

    def forward(self, views: list[torch.Tensor]) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called by the loop between ``backward`` and the optimizer step (e.g. to drop a frozen layer's grads).

        Dropping gradients here, rather than detaching inside ``forward``, keeps every parameter in the graph,
        which DistributedDataParallel requires.
        """

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) pairs the loop EMA-updates after each optimizer step."""
        return []

    def momentum(self, progress: float) -> float:
        """EMA coefficient at training progress in [0, 1]."""
        return 0.0

    def collapse_reason(self, metrics: dict[str, float]) -> str | None:
        """The objective's own collapse signal, judged once per epoch from the epoch's metrics (``train/<key>``: the
        epoch means of its terms and reports): a short reason when it has collapsed, else None. The loop treats it
        like the embedding monitors (``monitor/collapsed``, ``train.stop_on_collapse``). wav2vec 2.0: codebook
        perplexity near its floor."""
        return None

    @classmethod
    def check_data(cls, data: DataSpec) -> None:
        """Refuse data the objective cannot use (raise ``UserError``); called before anything trains."""

    @property
    def eval_encoder(self) -> nn.Module:
        """The encoder kept for downstream evaluation."""
        return self.encoder


class TextObjective(Objective):
    """Base of the language objectives: token ids in, no image views; ``cfg.layout`` says how rows are built."""

    modalities: ClassVar[frozenset[str]] = frozenset({"text"})
    requires: ClassVar[frozenset[str]] = frozenset({"pooled", "tokens"})

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """int64 (B, L) token ids -> views; the ids themselves by default."""
        return [x]


def check_compatible(objective: type[Objective], encoder_cls: type, modality: str) -> None:
    """Refuse an objective/encoder/modality combination before any data loads."""
    from ssl_tasks.core.errors import UserError
    from ssl_tasks.core.modality import trains_in

    trains = trains_in(objective, modality)  # refuses data the objective cannot train on
    wanted = objective.encoder_modality or trains
    enc_modality = getattr(encoder_cls, "modality", "image")
    if enc_modality != wanted:
        need = f"the data is {modality}" if objective.encoder_modality is None else f"its {wanted} tower is the encoder"
        raise UserError(f"encoder {encoder_cls.__name__} encodes {enc_modality}, but {need}")
    missing = objective.requires - getattr(encoder_cls, "capabilities", frozenset())
    if missing:
        raise UserError(f"encoder {encoder_cls.__name__} lacks {sorted(missing)} required by the objective")
