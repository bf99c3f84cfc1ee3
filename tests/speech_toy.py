"""A test-only speech encoder and frame-target objective, standing in for the speech-model branch's ``wav2vec2``
encoder and ``hubert`` objective until they are merged (the speech contract, ``modalities/speech/frames.py``).

``toy_speech``: the wav2vec 2.0 frame grid (``CONV_LAYERS``: 400-sample field, hop 320) as a few narrow 1-D
convolutions and a linear layer; ``forward(wave, lengths)`` is the mean over each row's valid frames, ``frames``
the per-frame features. ``toy_frame_targets``: cross-entropy of a linear head on every valid frame against the
``tokenizer@<dataset>`` stage's cluster ids (``needs_targets``: the feed adds them), a minimal HuBERT without
masking. The pipeline test names this module in params.yaml's ``plugins`` (a copy beside params.yaml); the unit
tests import only the encoder (``speech_toy_encoder``), so the objective never joins the test process's registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from speech_toy_encoder import ToySpeechEncoder  # noqa: F401  (registers toy_speech)
from torch import nn

from ssl_tasks.objectives.base import OBJECTIVES, Objective, StepResult


@dataclass(frozen=True)
class FrameTargetsConfig:
    num_clusters: int = 100


@OBJECTIVES.register("toy_frame_targets")
class FrameTargets(Objective):
    """Predict each valid frame's k-means cluster id (HuBERT's targets, no masking)."""

    Config = FrameTargetsConfig
    modalities: ClassVar[frozenset[str]] = frozenset({"speech"})
    needs_targets: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, cfg: FrameTargetsConfig, data: object) -> None:
        super().__init__(encoder, cfg, data)
        if getattr(data, "num_targets", cfg.num_clusters) != cfg.num_clusters:
            from ssl_tasks.core.errors import UserError

            raise UserError(f"num_clusters {cfg.num_clusters} != the targets' {data.num_targets}")
        self.head = nn.Linear(encoder.out_dim, cfg.num_clusters)

    def make_views(self, x: tuple[torch.Tensor, ...], g: torch.Generator) -> list[torch.Tensor]:
        wave, lengths, targets = x
        return [wave.float(), lengths.long(), targets.long()]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        wave, lengths, targets = views
        h, pad = self.encoder.frames(wave, lengths)  # (B, F, D), (B, F)
        logits = self.head(h)  # (B, F, K)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        valid = targets >= 0
        acc = (logits.argmax(-1) == targets)[valid].float().mean()
        pooled = self.encoder.pool(h, pad).detach()  # (B, D)
        return StepResult(loss=loss, terms={"frame_ce_loss": loss.detach()}, embeddings=(pooled, pooled),
                          report={"masked_accuracy": float(acc)})
