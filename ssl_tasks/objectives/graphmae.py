"""GraphMAE: masked node-feature reconstruction with a GNN decoder and the scaled cosine error.

Hou, Liu, Cen, Dong, Yang, Wang, Tang. "GraphMAE: Self-Supervised Masked Graph Autoencoders", KDD 2022,
arXiv:2205.10803. ``mask_rate`` of the nodes are masked; of those, ``replace_rate`` take a random node's features
and the rest a learnable ``[MASK]`` token. The GAT encoder's output passes a bias-free linear map, is
**re-masked** (masked nodes' codes set to zero) and a one-layer GAT decoder (1 head) reconstructs the features;
the loss is the scaled cosine error ``(1 - cos)^alpha`` over masked nodes. Paper's Cora setting (its
``configs.yml``): GAT 2 x (4 heads x 128), PReLU, in_drop 0.2, attn_drop 0.1, mask 0.5, replace 0.05, alpha 3,
Adam lr 0.001, weight decay 2e-4, 1500 epochs with a cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssl_tasks.losses.scaled_cosine import ScaledCosineError
from ssl_tasks.modalities.graph.augment import mask_nodes
from ssl_tasks.modalities.graph.encoders import pyg
from ssl_tasks.objectives.base import OBJECTIVES, StepResult
from ssl_tasks.objectives.dgi import GraphObjective, graph_input


@dataclass(frozen=True)
class GraphMAEConfig:
    mask_rate: float = 0.5
    replace_rate: float = 0.05
    alpha: float = 3.0
    remask: bool = True
    decoder_heads: int = 1
    decoder_feat_drop: float = 0.2
    decoder_attn_drop: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.mask_rate < 1 and 0 <= self.replace_rate < 1):
            raise ValueError("mask_rate must be in (0, 1) and replace_rate in [0, 1)")


@OBJECTIVES.register("graphmae")
class GraphMAE(GraphObjective):
    Config = GraphMAEConfig

    def __init__(self, encoder: nn.Module, cfg: GraphMAEConfig, data: object) -> None:
        super().__init__(encoder, cfg, data)
        in_dim, d = int(data.num_features), int(encoder.out_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, in_dim))
        self.encoder_to_decoder = nn.Linear(d, d, bias=False)
        self.decoder = pyg().nn.GATConv(d, in_dim, heads=cfg.decoder_heads, concat=False,
                                        dropout=cfg.decoder_attn_drop)
        self.criterion = ScaledCosineError(cfg.alpha)

    def make_views(self, x: object, g: torch.Generator) -> list[torch.Tensor]:
        feats, ei = graph_input(x)
        masked, token, noise, source = mask_nodes(feats.shape[0], self.cfg.mask_rate, self.cfg.replace_rate, g,
                                                  feats.device)
        return [feats, ei, masked, token, noise, source]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        feats, ei, masked, token, noise, source = views
        x = feats.clone()
        x[token] = 0.0
        x[noise] = feats[source]
        is_token = torch.zeros(feats.shape[0], 1, device=feats.device, dtype=feats.dtype)
        is_token[token] = 1.0
        x = x + is_token * self.mask_token  # the learnable [MASK] on token nodes
        h = self.encoder(x, ei)  # (N, D)
        rep = self.encoder_to_decoder(h)
        if self.cfg.remask:
            keep = torch.ones(feats.shape[0], 1, device=feats.device, dtype=rep.dtype)
            keep[masked] = 0.0
            rep = rep * keep
        recon = self.decoder(nn.functional.dropout(rep, self.cfg.decoder_feat_drop, self.training), ei)
        loss = self.criterion(recon[masked], feats[masked])
        hd = h.detach()
        return StepResult(loss=loss, terms={"sce_loss": loss.detach()}, embeddings=(hd, hd))
