"""Span corruption, T5's objective (Raffel et al. "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", JMLR 2020, arXiv:1910.10683, Sec. 3.1.4 and 3.3).

15% of each row's tokens, in spans of mean length 3, are replaced by sentinels in the encoder input; the
decoder predicts ``<extra_id_0> span_0 <extra_id_1> span_1 ... [SEP]`` with teacher forcing
(``modalities/text/corruption.py``). The pooled encoder (not the decoder) is what evaluation sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.modalities.text.corruption import span_corrupt
from ssl_tasks.objectives.base import OBJECTIVES, StepResult, TextDataSpec, TextObjective


@dataclass(frozen=True)
class SpanCorruptionConfig:
    noise_density: float = 0.15
    mean_span_length: float = 3.0
    layout: Literal["pack", "pad"] = "pack"

    def __post_init__(self) -> None:
        if not 0 < self.noise_density < 1:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}")
        if self.mean_span_length < 1:
            raise ValueError(f"mean_span_length must be >= 1, got {self.mean_span_length}")


@OBJECTIVES.register("span_corruption")
class SpanCorruption(TextObjective):
    Config = SpanCorruptionConfig
    requires = frozenset({"pooled", "tokens", "seq2seq"})

    def __init__(self, encoder: nn.Module, cfg: SpanCorruptionConfig, data: TextDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        if not data.sentinel_ids:
            raise ValueError("span_corruption needs sentinel tokens: train the tokenizer with num_sentinels > 0")

    def _corrupt(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.data
        return span_corrupt(x, g, pad_id=d.pad_id, eos_id=d.sep_id, bos_id=d.cls_id, sentinel_ids=d.sentinel_ids,
                            noise_density=self.cfg.noise_density, mean_span_length=self.cfg.mean_span_length)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """ids -> [encoder inputs, decoder inputs, targets, a second corruption's encoder inputs (monitors)]."""
        enc, dec, tgt = self._corrupt(x, g)
        second, _, _ = self._corrupt(x, g)
        return [enc, dec, tgt, second]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        enc_in, dec_in, target, second = views
        memory = self.encoder.forward_tokens(enc_in)  # (B, Li, D)
        logits = self.encoder.lm_logits(self.encoder.decode(dec_in, memory, enc_in))  # (B, Lt, V)
        tgt = target.masked_fill(target == self.data.pad_id, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
        keep = tgt != -100
        acc = float((logits.detach().argmax(-1)[keep] == tgt[keep]).float().mean())
        emb = None
        if self.monitoring:
            with torch.no_grad():
                emb = (self.encoder.pool(memory.detach(), enc_in), self.encoder(second))
        return StepResult(loss=loss, terms={"span_loss": loss.detach()}, embeddings=emb, report={"span_acc": acc})
