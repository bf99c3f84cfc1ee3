"""Deep Graph Infomax: maximise mutual information between node embeddings and a graph summary.

Veličković, Fedus, Hamilton, Liò, Bengio, Hjelm. "Deep Graph Infomax", ICLR 2019, arXiv:1809.10341.
The corruption keeps the graph and shuffles the feature rows; the summary is ``sigmoid(mean of the real
embeddings)``; a bilinear discriminator scores (node, summary) pairs, trained with BCE (real: 1, corrupted: 0).
Paper's Cora setting: a one-layer GCN of 512 with PReLU (``gcn``), Adam lr 0.001, early stopping (patience 20)
on the training loss; full-batch, one step per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.losses.dgi import BilinearDiscriminator, DGILoss, dgi_summary
from ssl_tasks.modalities.graph.augment import shuffle_rows
from ssl_tasks.objectives.base import OBJECTIVES, Objective, StepResult


@dataclass(frozen=True)
class DGIConfig:
    """DGI has no knobs on Cora beyond the encoder and the optimiser."""


def graph_input(x: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The feed's batch: (features (N, F) float, edge_index (2, E) int64)."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise TypeError("graph objectives take (features, edge_index) batches")
    feats, ei = x
    return feats.float(), ei.long()


class GraphObjective(Objective):
    modalities: ClassVar[frozenset[str]] = frozenset({"graph"})
    requires: ClassVar[frozenset[str]] = frozenset({"nodes"})


@OBJECTIVES.register("dgi")
class DGI(GraphObjective):
    Config = DGIConfig

    def __init__(self, encoder: nn.Module, cfg: DGIConfig, data: object) -> None:
        super().__init__(encoder, cfg, data)
        self.discriminator = BilinearDiscriminator(encoder.out_dim)
        self.criterion = DGILoss()

    def make_views(self, x: object, g: torch.Generator) -> list[torch.Tensor]:
        feats, ei = graph_input(x)
        return [feats, ei, shuffle_rows(feats, g)]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        feats, ei, corrupt = views
        h = self.encoder(feats, ei)  # (N, D)
        hc = self.encoder(corrupt, ei)
        s = dgi_summary(h)
        pos, neg = self.discriminator(h, s), self.discriminator(hc, s)
        loss = self.criterion(pos, neg)
        acc = ((pos > 0).float().mean() + (neg < 0).float().mean()) / 2
        hd = h.detach()
        return StepResult(loss=loss, terms={"dgi_loss": loss.detach()}, report={"disc_accuracy": float(acc)},
                          embeddings=(hd, hd))
