"""wav2vec 2.0: contrastive prediction of quantized latents at masked frames.

Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
Representations", NeurIPS 2020, arXiv:2006.11477. The local features of the convolutional encoder are
normalised, projected, masked in spans (a learned mask embedding replaces masked frames; ``speech.masking``) and
contextualised by the transformer; the unmasked normalised features of the masked frames are quantized by a
Gumbel-softmax product quantizer (``losses.gumbel_quantizer``). Loss (Eq. 2): the contrastive loss over K
distractors from masked frames of the same utterance, cosine / 0.1 (``losses.masked_contrastive``), plus 0.1 x the
codebook diversity loss, plus ``feature_penalty_weight`` x the mean square of the local features (the reference's
feature penalty, weight 10; 0 by default here, below); the feature encoder's gradients are scaled by 0.1, as in the
reference.

Settings for short clips (FSDD: 6-113 frames at 16 kHz):

* masking: spans of M = 5 frames started with p = 0.13 at each position where one fits, never longer than half a
  clip, at least one span and one unmasked frame per clip: 43-55% of the frames of 6-113 frame clips are masked
  (``speech/masking.py`` has the table; the paper's p = 0.065, M = 10 gives 34-52% under the same rule). With
  ``pad_is_audio`` the zero padding of a row counts as audio (the "pad every clip to 1 s" option).
* codebook: G = 2 groups of V = 64 entries (the paper: 2 x 320 for 960 h of speech). FSDD's training split is
  ~2,700 clips, ~70k frames; a batch of 32 clips masks ~500 frames, so V = 320 would leave most entries unseen
  in a batch and the batch perplexity (bounded by the frames) could not tell use from collapse; 64 x 64 = 4,096
  code pairs is still far more than the ~40 phones x 6 speakers of ten digit words.
* Gumbel temperature: 2 -> 0.5 exponentially over the first 70% of the run's own steps (the reference: 2 x
  0.999995^step, which reaches 0.5 after ~277k of its 400k updates, i.e. ~70%); the loop's ``progress`` tells it.
* feature penalty: 0 by default. With the reference's 10 (and with 1) the local features' mean square fell from
  0.04 to 0.001 within 40 steps and the contrastive task stayed at chance (loss ln(K + 1), accuracy ~0.2) on a
  synthetic tone task where without the penalty the loss fell and the accuracy rose to ~0.38 in 60 steps: with
  bias-free convolutions and GELU, shrinking activations make the feature encoder nearly linear. Set it to use it.
* collapse: the batch perplexity of the hard codes (``codebook_perplexity``, G = 2: collapse to one entry per group
  gives 2) is averaged per epoch; below ``collapse_perplexity`` the objective declares the run collapsed
  (``collapse_reason``), which ``train.stop_on_collapse`` turns into a stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.losses.gumbel_quantizer import GumbelProductQuantizer
from ssl_tasks.losses.masked_contrastive import MaskedContrastiveLoss, sample_distractors
from ssl_tasks.modalities.speech.encoders import frame_counts, masked_mean
from ssl_tasks.modalities.speech.frames import SpeechDataSpec, conv_frames
from ssl_tasks.modalities.speech.masking import span_mask
from ssl_tasks.objectives.base import OBJECTIVES, Objective, StepResult


def speech_input(x: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The feed's batch: (wave (B, T) float, lengths (B,) int64[, targets (B, F) int64]); arrays or tensors."""
    if not isinstance(x, (tuple, list)) or len(x) not in (2, 3):
        raise TypeError("speech objectives take (wave, lengths) or (wave, lengths, targets) batches")
    wave, lengths = torch.as_tensor(x[0]).float(), torch.as_tensor(x[1]).long()
    targets = torch.as_tensor(x[2]).long() if len(x) == 3 else None
    if wave.ndim != 2 or lengths.shape != wave.shape[:1]:
        raise ValueError(f"speech batch: wave must be (B, T) and lengths (B,), got {tuple(wave.shape)} and "
                         f"{tuple(lengths.shape)}")
    return wave, lengths, targets


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``factor`` (wav2vec 2.0's ``feature_grad_mult``)."""
    return x if factor == 1.0 else x * factor + x.detach() * (1.0 - factor)


def check_masking(mask_prob: float, mask_length: int) -> None:
    if not 0 < mask_prob <= 1:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")


class SpeechObjective(Objective):
    """Base of the speech objectives: ``(wave, lengths[, targets])`` batches, span masks drawn in ``make_views``."""

    modalities: ClassVar[frozenset[str]] = frozenset({"speech"})
    requires: ClassVar[frozenset[str]] = frozenset({"pooled", "frames"})
    needs_targets: ClassVar[bool] = False  # True: the feed's batches carry per-frame cluster targets (HuBERT)

    def __init__(self, encoder: nn.Module, cfg: object, data: SpeechDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.mask_embedding = nn.Parameter(torch.empty(encoder.out_dim).uniform_())  # as the reference

    @classmethod
    def check_data(cls, data: SpeechDataSpec) -> None:
        if not isinstance(data, SpeechDataSpec):
            raise UserError(f"{cls.__name__} trains on speech data, got {type(data).__name__}")
        if conv_frames(data.num_samples) < 2:
            raise UserError(f"{cls.__name__}: rows of {data.num_samples} samples make fewer than 2 encoder frames")

    def span_masks(self, wave: torch.Tensor, lengths: torch.Tensor, g: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(lengths the encoder sees, (B, F) span mask over each row's valid frames)."""
        if self.cfg.pad_is_audio:
            lengths = torch.full_like(lengths, wave.shape[1])
        counts = frame_counts(lengths).clamp_min(1)  # the encoder keeps one frame of a row shorter than a frame
        return lengths, span_mask(counts, conv_frames(wave.shape[1]), self.cfg.mask_prob, self.cfg.mask_length, g)

    def masked_context(self, wave: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> local features (B, F, C) (gradient scaled), feature penalty, context of the masked input (B, F, D),
        padding mask (B, F)."""
        enc = self.encoder
        z, pad = enc.local_features(wave, lengths)
        z = scale_grad(z, self.cfg.feature_grad_mult)
        keep = (~pad).to(z.dtype)
        penalty = (z.float().pow(2).mean(-1) * keep).sum() / keep.sum()  # mean square over the valid frames
        zn = enc.feature_norm(z)
        x = enc.project(zn)
        x = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)  # (B, F, D)
        return zn, penalty, enc.context(x, pad), pad


@dataclass(frozen=True)
class Wav2Vec2Config:
    """Paper (BASE): p = 0.065, M = 10, K = 100, G = 2 x V = 320, temperature 0.1, Gumbel 2 -> 0.5, diversity 0.1,
    feature penalty 10, final dim 256; the defaults here suit FSDD's short clips (module docstring)."""

    mask_prob: float = 0.13
    mask_length: int = 5
    pad_is_audio: bool = False
    num_negatives: int = 100
    temperature: float = 0.1
    codebook_groups: int = 2
    codebook_entries: int = 64
    final_dim: int = 128
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 0.0
    feature_grad_mult: float = 0.1
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_anneal_fraction: float = 0.7
    collapse_perplexity: float = 3.0

    def __post_init__(self) -> None:
        check_masking(self.mask_prob, self.mask_length)
        if self.num_negatives < 1 or self.codebook_groups < 1 or self.codebook_entries < 2:
            raise ValueError("num_negatives >= 1, codebook_groups >= 1 and codebook_entries >= 2 are required")
        if not 0 < self.gumbel_end <= self.gumbel_start:
            raise ValueError(f"need 0 < gumbel_end <= gumbel_start, got {self.gumbel_end}, {self.gumbel_start}")
        if not 0 < self.gumbel_anneal_fraction <= 1:
            raise ValueError(f"gumbel_anneal_fraction must be in (0, 1], got {self.gumbel_anneal_fraction}")
        if self.temperature <= 0 or not 0 <= self.feature_grad_mult <= 1:
            raise ValueError("temperature must be > 0 and feature_grad_mult in [0, 1]")


def gumbel_temperature(progress: float, start: float, end: float, fraction: float) -> float:
    """Exponential decay from ``start`` to ``end`` over the first ``fraction`` of training, then ``end``."""
    t = min(max(progress, 0.0), 1.0) / fraction
    return max(end, start * (end / start) ** t)


@OBJECTIVES.register("wav2vec2")
class Wav2Vec2(SpeechObjective):
    Config = Wav2Vec2Config

    def __init__(self, encoder: nn.Module, cfg: Wav2Vec2Config, data: SpeechDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.quantizer = GumbelProductQuantizer(encoder.conv_channels, cfg.codebook_groups, cfg.codebook_entries,
                                                cfg.final_dim)
        self.project_q = nn.Linear(cfg.final_dim, cfg.final_dim)
        self.final_proj = nn.Linear(encoder.out_dim, cfg.final_dim)
        self.criterion = MaskedContrastiveLoss(cfg.temperature)

    def make_views(self, x: object, g: torch.Generator) -> list[torch.Tensor]:
        wave, lengths, _ = speech_input(x)
        lengths, mask = self.span_masks(wave, lengths, g)
        distractors, valid = sample_distractors(mask, self.cfg.num_negatives, g)
        return [wave, lengths, mask.to(wave.device), distractors.to(wave.device), valid.to(wave.device)]

    def gumbel_temperature(self) -> float:
        cfg = self.cfg
        return gumbel_temperature(self.progress, cfg.gumbel_start, cfg.gumbel_end, cfg.gumbel_anneal_fraction)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        wave, lengths, mask, distractors, valid = views
        cfg = self.cfg
        zn, penalty, h, pad = self.masked_context(wave, lengths, mask)  # (B, F, C), (), (B, F, D), (B, F)
        tau = self.gumbel_temperature()
        quant = self.quantizer(zn[mask], tau)  # masked frames' unmasked features (N, C) -> (N, final_dim)
        q = self.project_q(quant.q)  # (N, final_dim)
        c = self.final_proj(h[mask])  # (N, final_dim)
        contrastive, acc = self.criterion(c, q, distractors, valid)
        loss = contrastive + cfg.diversity_weight * quant.diversity_loss + cfg.feature_penalty_weight * penalty
        pooled = masked_mean(h.detach(), pad)  # (B, D)
        report = {"contrastive_accuracy": float(acc), "codebook_perplexity": float(quant.code_perplexity),
                  "prob_perplexity": float(quant.prob_perplexity.detach()), "gumbel_temperature": tau,
                  "masked_fraction": float(mask.sum() / (~pad).sum())}
        return StepResult(loss=loss, terms={"contrastive_loss": contrastive.detach(),
                                            "diversity_loss": quant.diversity_loss.detach(),
                                            "feature_penalty_loss": penalty.detach()},
                          report=report, embeddings=(pooled, pooled))

    def collapse_reason(self, metrics: dict[str, float]) -> str | None:
        ppl = metrics.get("train/codebook_perplexity")
        if ppl is None or not math.isfinite(ppl) or ppl >= self.cfg.collapse_perplexity:
            return None
        return (f"codebook perplexity {ppl:.2f} < collapse_perplexity {self.cfg.collapse_perplexity} (of "
                f"{self.cfg.codebook_groups} x {self.cfg.codebook_entries} entries)")


__all__ = ["SpeechObjective", "Wav2Vec2", "Wav2Vec2Config", "gumbel_temperature", "speech_input"]
