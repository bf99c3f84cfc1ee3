"""Next-token prediction, the GPT objective (Radford et al. "Improving Language Understanding by Generative
Pre-Training", 2018; "Language Models are Unsupervised Multitask Learners", 2019).

A causal transformer predicts token t+1 from tokens <= t over packed rows of the corpus; the output layer
is the tied token embedding (Press & Wolf 2017). The step reports perplexity, exp(loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.objectives.base import OBJECTIVES, StepResult, TextDataSpec, TextObjective


def next_token_loss(encoder: nn.Module, ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids -> (mean cross entropy of predicting ids[:, 1:] from ids[:, :-1], hidden states (B, L, D))."""
    h = encoder.forward_tokens(ids)  # (B, L, D)
    logits = encoder.lm_logits(h[:, :-1])  # (B, L-1, V)
    target = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100), h


@dataclass(frozen=True)
class CausalLMConfig:
    layout: Literal["pack", "pad"] = "pack"


@OBJECTIVES.register("causal_lm")
class CausalLM(TextObjective):
    Config = CausalLMConfig
    requires = frozenset({"pooled", "tokens", "causal"})

    def __init__(self, encoder: nn.Module, cfg: CausalLMConfig, data: TextDataSpec) -> None:
        super().__init__(encoder, cfg, data)

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        (ids,) = views
        loss, h = next_token_loss(self.encoder, ids, self.data.pad_id)
        emb = None
        if self.monitoring:  # a second pass (other dropout masks) as the monitors' second view
            with torch.no_grad():
                emb = (self.encoder.pool(h.detach(), ids), self.encoder(ids))
        return StepResult(loss=loss, terms={"lm_loss": loss.detach()}, embeddings=emb,
                          report={"perplexity": math.exp(min(float(loss.detach()), 50.0))})
