"""SimCSE: dropout is the augmentation (Gao, Yao, Chen. "SimCSE: Simple Contrastive Learning of Sentence
Embeddings", EMNLP 2021, arXiv:2104.08821).

The same padded sentence goes through the encoder twice in training mode; the two dropout masks make two
views, contrasted against the batch's other sentences (``losses/simcse.py``). As in the paper's unsupervised
model, an MLP pooler (linear + tanh) sits on the pooled features during training only and is discarded.
Defaults: temperature 0.05 (paper Table D.1). The encoder's ``dropout`` must be > 0 or the views coincide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ssl_tasks.losses.simcse import SimCSELoss
from ssl_tasks.objectives.base import OBJECTIVES, StepResult, TextDataSpec, TextObjective


@dataclass(frozen=True)
class SimCSEConfig:
    temperature: float = 0.05
    layout: Literal["pad"] = "pad"  # sentence-level: one sentence per row


@OBJECTIVES.register("simcse")
class SimCSE(TextObjective):
    Config = SimCSEConfig

    def __init__(self, encoder: nn.Module, cfg: SimCSEConfig, data: TextDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in encoder.modules()):
            raise ValueError("simcse needs an encoder with dropout > 0 (dropout is its only augmentation)")
        d = encoder.out_dim
        self.pooler = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        self.loss_fn = SimCSELoss(cfg.temperature)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        return [x, x]  # the two views differ only in the dropout masks drawn inside forward

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        ids1, ids2 = views
        h1, h2 = self.encoder(ids1), self.encoder(ids2)  # (B, D) each, independent dropout
        p1, p2 = self.pooler(h1), self.pooler(h2)
        loss = self.loss_fn(p1, p2)
        return StepResult(loss=loss, terms={"simcse_loss": loss.detach()}, embeddings=(h1.detach(), h2.detach()),
                          projections=(p1.detach(), p2.detach()))
