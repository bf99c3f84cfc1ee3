"""GraphCL, node level: DGI's objective with the summary taken from augmented views.

You, Chen, Sui, Chen, Wang, Shen. "Graph Contrastive Learning with Augmentations", NeurIPS 2020,
arXiv:2010.13902; the node-level (Cora) variant of the authors' code builds on DGI: the real graph's node
embeddings ``h`` and the row-shuffled graph's ``h~`` are scored against the summaries ``s1``, ``s2`` of two
augmented views, and the loss is ``BCE(D(h, s1), D(h~, s1)) + BCE(D(h, s2), D(h~, s2))``.

Augmentations: edge dropping (default 20% of the edges, the Cora setting of the authors' script) and/or
feature-column masking, drawn from the loop's generator. Views are **re-sampled every step** (the authors' script
samples them once before training); ``fixed_views: true`` would need state across steps, so is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssl_tasks.losses.dgi import BilinearDiscriminator, DGILoss, dgi_summary
from ssl_tasks.modalities.graph.augment import drop_edges, mask_feature_columns, shuffle_rows
from ssl_tasks.objectives.base import OBJECTIVES, StepResult
from ssl_tasks.objectives.dgi import GraphObjective, graph_input


@dataclass(frozen=True)
class GraphCLConfig:
    drop_edge: float = 0.2  # share of edges dropped in each augmented view
    mask_feature: float = 0.0  # share of feature columns zeroed in each augmented view

    def __post_init__(self) -> None:
        if not (0 <= self.drop_edge < 1 and 0 <= self.mask_feature < 1):
            raise ValueError("drop_edge and mask_feature must be in [0, 1)")


@OBJECTIVES.register("graphcl")
class GraphCL(GraphObjective):
    Config = GraphCLConfig

    def __init__(self, encoder: nn.Module, cfg: GraphCLConfig, data: object) -> None:
        super().__init__(encoder, cfg, data)
        self.discriminator = BilinearDiscriminator(encoder.out_dim)
        self.criterion = DGILoss()

    def make_views(self, x: object, g: torch.Generator) -> list[torch.Tensor]:
        feats, ei = graph_input(x)
        views = [feats, ei, shuffle_rows(feats, g)]
        for _ in range(2):
            views += [mask_feature_columns(feats, self.cfg.mask_feature, g), drop_edges(ei, self.cfg.drop_edge, g)]
        return views

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        feats, ei, corrupt, x1, e1, x2, e2 = views
        h, hc = self.encoder(feats, ei), self.encoder(corrupt, ei)
        h1, h2 = self.encoder(x1, e1), self.encoder(x2, e2)
        loss = torch.zeros((), device=h.device)
        for s in (dgi_summary(h1), dgi_summary(h2)):
            loss = loss + self.criterion(self.discriminator(h, s), self.discriminator(hc, s))
        return StepResult(loss=loss, terms={"graphcl_loss": loss.detach()},
                          embeddings=(h1.detach(), h2.detach()))
