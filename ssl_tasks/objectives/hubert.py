"""HuBERT: masked prediction of offline cluster targets.

Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed. "HuBERT: Self-Supervised Speech Representation Learning by
Masked Prediction of Hidden Units", IEEE/ACM TASLP 2021, arXiv:2106.07447. The encoder's projected local features
are masked in spans (learned mask embedding; the same rule and defaults as ``wav2vec2``: ``speech.masking``), the
transformer contextualises them, and every masked frame predicts its target cluster id with the paper's head
(Sec. III-B): a linear projection of the output, cosine similarity with a learned embedding per cluster, over a
temperature of 0.1; cross-entropy over masked frames only (alpha = 1: unmasked frames carry no loss), and padding
(target -100) none (``losses.masked_prediction``). As in the reference, 10 x the local features' mean square is
added and the feature encoder's gradients are scaled by 0.1.

Targets come with the batches (``(wave, lengths, targets)``): iteration 1 from k-means on MFCC, iteration 2 from
k-means on a layer of the iteration-1 model, both made by the dataset's tokenizer stage; ``num_clusters`` must equal
the targets' class count (``SpeechDataSpec.num_targets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.losses.masked_prediction import MaskedPredictionLoss
from ssl_tasks.modalities.speech.encoders import masked_mean
from ssl_tasks.modalities.speech.frames import SpeechDataSpec
from ssl_tasks.objectives.base import OBJECTIVES, StepResult
from ssl_tasks.objectives.wav2vec2 import SpeechObjective, check_masking, speech_input


@dataclass(frozen=True)
class HuBERTConfig:
    """Paper (BASE): p = 0.08, M = 10, 100 (iteration 1) / 500 clusters, projection to 256, temperature 0.1;
    masking defaults here are wav2vec2's for short clips."""

    num_clusters: int = 100
    mask_prob: float = 0.13
    mask_length: int = 5
    pad_is_audio: bool = False
    proj_dim: int = 128
    temperature: float = 0.1
    feature_penalty_weight: float = 10.0
    feature_grad_mult: float = 0.1

    def __post_init__(self) -> None:
        check_masking(self.mask_prob, self.mask_length)
        if self.num_clusters < 2 or self.proj_dim < 1 or self.temperature <= 0:
            raise ValueError("num_clusters >= 2, proj_dim >= 1 and temperature > 0 are required")
        if not 0 <= self.feature_grad_mult <= 1:
            raise ValueError(f"feature_grad_mult must be in [0, 1], got {self.feature_grad_mult}")


class ClusterLogits(nn.Module):
    """HuBERT's head: cos(W h, e_k) / temperature for every cluster embedding e_k."""

    def __init__(self, dim: int, proj_dim: int, num_clusters: int, temperature: float) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, proj_dim)
        self.embeddings = nn.Parameter(torch.empty(num_clusters, proj_dim))
        nn.init.uniform_(self.embeddings)
        self.temperature = temperature

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K) logits."""
        p = F.normalize(self.proj(h).float(), dim=-1)  # (..., P)
        return p @ F.normalize(self.embeddings.float(), dim=-1).T / self.temperature


@OBJECTIVES.register("hubert")
class HuBERT(SpeechObjective):
    Config = HuBERTConfig
    needs_targets: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, cfg: HuBERTConfig, data: SpeechDataSpec) -> None:
        if data.num_targets != cfg.num_clusters:
            raise UserError(f"hubert: num_clusters is {cfg.num_clusters} but the dataset's targets have "
                            f"{data.num_targets} classes; set objective_kwargs.num_clusters to {data.num_targets} "
                            "(or the tokenizer's clusters to match)")
        super().__init__(encoder, cfg, data)
        self.head = ClusterLogits(encoder.out_dim, cfg.proj_dim, cfg.num_clusters, cfg.temperature)
        self.criterion = MaskedPredictionLoss()

    def make_views(self, x: object, g: torch.Generator) -> list[torch.Tensor]:
        wave, lengths, targets = speech_input(x)
        if targets is None:
            raise ValueError("hubert needs (wave, lengths, targets) batches: the dataset has no cluster targets")
        lengths, mask = self.span_masks(wave, lengths, g)
        if targets.shape != mask.shape:
            raise ValueError(f"hubert: targets {tuple(targets.shape)} do not match the encoder's frames "
                             f"{tuple(mask.shape)}")
        return [wave, lengths, mask.to(wave.device), targets]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        wave, lengths, mask, targets = views
        _, penalty, h, pad = self.masked_context(wave, lengths, mask)  # (B, F, D)
        logits = self.head(h)  # (B, F, K)
        ce, acc = self.criterion(logits, targets, mask)
        loss = ce + self.cfg.feature_penalty_weight * penalty
        pooled = masked_mean(h.detach(), pad)
        return StepResult(loss=loss, terms={"masked_prediction_loss": ce.detach(),
                                            "feature_penalty_loss": penalty.detach()},
                          report={"masked_accuracy": float(acc), "masked_fraction": float(mask.sum() / (~pad).sum())},
                          embeddings=(pooled, pooled))
