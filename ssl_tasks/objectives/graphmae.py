"""GraphMAE: masked node-feature reconstruction with a GNN decoder and the scaled cosine error.

Hou, Liu, Cen, Dong, Yang, Wang, Tang. "GraphMAE: Self-Supervised Masked Graph Autoencoders", KDD 2022,
arXiv:2205.10803. ``mask_rate`` of the nodes are masked; of those, ``replace_rate`` take a random node's features
and the rest a learnable ``[MASK]`` token. The GAT encoder's output passes a bias-free linear map, is
**re-masked** (masked nodes' codes set to zero) and a one-layer GAT decoder (1 head) reconstructs the features;
the loss is the scaled cosine error ``(1 - cos)^alpha`` over masked nodes. Paper's Cora setting (its
``configs.yml``): GAT 2 x (4 heads x 128), PReLU, in_drop 0.2, attn_drop 0.1, mask 0.5, replace 0.05, alpha 3,
Adam lr 0.001, weight decay 2e-4, 1500 epochs with a cosine schedule.

``impl: csr`` (the default) computes the decoder's output on the masked nodes only (the loss reads nothing else)
and in the order "sum over neighbours, then the linear map": a ``GATConv`` output is ``W (sum_j a_ij r_j) + b``
and its attention scores ``<W r_j, a>`` equal ``<r_j, W^T a>``, so the per-edge work is over the 512-wide codes
instead of the 1433 reconstructed features, and ``W`` multiplies half the rows. The attention coefficients and
their dropout are drawn over every edge in PyG's order, as ``GATConv`` draws them; the [MASK] token is written
into the token rows (not added as a dense product) and the encoder-to-decoder map runs on the kept rows only
(the others are re-masked to zero). So a seeded step gives the same loss and gradients as ``impl: pyg`` (the
original forward, ``GATConv`` on every node) up to float summation order (tests/modalities/test_gat_fast.py). On
Cora, one thread of the shared 2-core CPU, alternated in one process: 1.0 s a step against 2.1 s
(bench/RESULTS.md section 8); most of the old step was the 1433-wide decoder's per-edge message tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssl_tasks.losses.scaled_cosine import ScaledCosineError
from ssl_tasks.modalities.graph.augment import mask_nodes
from ssl_tasks.modalities.graph.encoders import pyg
from ssl_tasks.modalities.graph.gat import (
    EdgeCSR,
    aggregate,
    attention,
    check_init,
    check_plain,
    edge_key,
    gat_edges,
    reference_init,
)
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
    impl: str = "csr"
    init: str = "reference"  # the decoder's GAT init: GraphMAE's ("reference") or PyG's default ("pyg")

    def __post_init__(self) -> None:
        check_init("graphmae", self.init)
        if not (0 < self.mask_rate < 1 and 0 <= self.replace_rate < 1):
            raise ValueError("mask_rate must be in (0, 1) and replace_rate in [0, 1)")
        if self.impl not in ("csr", "pyg"):
            raise ValueError(f"graphmae impl must be 'csr' or 'pyg', got {self.impl!r}")


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
        if cfg.init == "reference":
            reference_init(self.decoder)
        self.criterion = ScaledCosineError(cfg.alpha)

    def make_views(self, x: object, g: torch.Generator) -> list[torch.Tensor]:
        feats, ei = graph_input(x)
        masked, token, noise, source = mask_nodes(feats.shape[0], self.cfg.mask_rate, self.cfg.replace_rate, g,
                                                  feats.device)
        return [feats, ei, masked, token, noise, source]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        feats, ei, masked, token, noise, source = views
        if self.cfg.impl == "pyg":
            return self._forward_pyg(feats, ei, masked, token, noise, source)
        x = feats.clone()
        x[noise] = feats[source]
        x[token] = self.mask_token.expand(token.numel(), -1)  # the learnable [MASK] on token nodes
        h = self.encoder(x, ei)  # (N, D)
        if self.cfg.remask:  # the masked nodes' codes are zero: map only the others
            keep = torch.ones(feats.shape[0], dtype=torch.bool, device=feats.device)
            keep[masked] = False
            kept = keep.nonzero().squeeze(1)
            rep = h.new_zeros(h.shape[0], self.encoder_to_decoder.out_features)
            rep = rep.index_copy(0, kept, self.encoder_to_decoder(h[kept]))
        else:
            rep = self.encoder_to_decoder(h)
        rep = nn.functional.dropout(rep, self.cfg.decoder_feat_drop, self.training)
        loss = self.criterion(self.decode_masked(rep, ei, masked), feats[masked])
        hd = h.detach()
        return StepResult(loss=loss, terms={"sce_loss": loss.detach()}, embeddings=(hd, hd))

    def _forward_pyg(self, feats: torch.Tensor, ei: torch.Tensor, masked: torch.Tensor, token: torch.Tensor,
                     noise: torch.Tensor, source: torch.Tensor) -> StepResult:
        """The reference: every node through ``GATConv``, the [MASK] token added as a dense product."""
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

    def decode_masked(self, rep: torch.Tensor, edge_index: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """``self.decoder(rep, edge_index)[masked]`` computed on the masked rows only, neighbours summed before the
        linear map (see the module docstring)."""
        dec, n = self.decoder, rep.shape[0]
        check_plain(dec)
        heads, c = dec.heads, dec.out_channels
        w = dec.lin.weight.view(heads, c, -1)  # (heads, C, D)
        # per-node scores <W_k r, a_k> = <r, W_k^T a_k>: (n, heads)
        a_src = rep @ torch.einsum("hcd,hc->dh", w, dec.att_src[0])
        a_dst = rep @ torch.einsum("hcd,hc->dh", w, dec.att_dst[0])
        g = self._decoder_edges(edge_index, n)
        alpha = attention(dec, a_src, a_dst, g.src, g.dst, n)  # (E, heads): every edge, GATConv's dropout draw
        row = torch.full((n,), -1, dtype=torch.long, device=rep.device)
        row[masked] = torch.arange(masked.numel(), device=rep.device)
        sel = (row.index_select(0, g.dst) >= 0).nonzero().squeeze(1)
        sub = EdgeCSR(g.src[sel], row[g.dst[sel]], n, masked.numel())
        agg = aggregate(alpha[sel], rep.unsqueeze(1).expand(n, heads, rep.shape[1]), sub)  # (M, heads, D)
        out = torch.einsum("mhd,hcd->mhc", agg, w)
        out = out.reshape(-1, heads * c) if dec.concat else out.mean(dim=1)
        return out + dec.bias if dec.bias is not None else out

    def _decoder_edges(self, edge_index: torch.Tensor, n: int) -> EdgeCSR:
        key = edge_key(edge_index, n)
        cached = getattr(self, "_edges", None)
        if cached is None or cached[0] != key:
            self._edges = (key, EdgeCSR(*gat_edges(edge_index, n), n, n))
        return self._edges[1]
