"""Graph encoders: ``(features (N, F), edge_index (2, E)) -> node embeddings (N, D)``.

* ``gcn``: Kipf & Welling's GCN (arXiv:1609.02907) as DGI uses it: ``PReLU(Â X W + b)`` with
  ``Â = D^-1/2 (A + I) D^-1/2``, one layer of width 512 by default. Propagation is a ``torch.sparse`` product
  with Â precomputed once per edge set (cached on the module), ``impl: sparse``; ``impl: pyg`` uses PyG's
  ``GCNConv`` instead (same maths, outputs equal to 1e-8). On Cora (1433 -> 512, one CPU thread of this 2-core
  machine) a forward + backward took 0.17-0.18 s with the sparse product against 0.24 s with GCNConv (1.35x;
  measured alternately in one process), so it is the default. (A sparse product for the 1.3%-dense input features
  as well was slower, 0.20 s: torch's CPU sparse kernels do not pay off there.)
* ``gat``: a GAT (Veličković et al. 2018, arXiv:1710.10903) of PyG ``GATConv`` layers as GraphMAE's encoder:
  two layers of 4 heads x 128 (concatenated: 512), feature dropout 0.2, attention dropout 0.1, PReLU after every
  layer (GraphMAE's ``encoding=True``), self-loops added. ``impl: csr`` (the default) runs each ``GATConv``'s
  forward through ``gat.gat_forward`` (the same parameters and random draws; the neighbour sum as a sparse CSR
  product instead of PyG's per-edge message tensors; the edge layout cached per edge set); ``impl: pyg`` calls
  ``GATConv`` itself. Outputs and gradients agree to float tolerance (tests/modalities/test_gat_fast.py).

Node features are row-normalised (each row sums to 1, as DGI, GCN and GraphMAE preprocess Cora) by
``normalise_features``, which the feed and every evaluation apply before the encoder.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS, Encoder

NAME = "graph"


def pyg():  # noqa: ANN201
    """``torch_geometric`` with its import-time torch.jit FutureWarning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        import torch_geometric
        import torch_geometric.nn  # noqa: F401
        import torch_geometric.utils  # noqa: F401
    return torch_geometric


def normalise_features(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise node features (rows summing to 0 stay 0)."""
    s = x.sum(dim=1, keepdim=True)
    return x / torch.where(s == 0, torch.ones_like(s), s)


def normalised_adjacency(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a coalesced sparse (N, N) tensor with ``Â[t, s]`` for each edge ``s -> t`` and
    ``D`` the in-degree (PyG ``gcn_norm``'s convention; the same matrix on an undirected graph); duplicate edges and
    given self-loops count once, as in a simple graph."""
    loops = torch.arange(n, device=edge_index.device)
    ei = torch.cat([edge_index[:, edge_index[0] != edge_index[1]], torch.stack([loops, loops])], dim=1)
    key = torch.unique(ei[1] * n + ei[0])  # row: target, col: source (messages flow source -> target, as in PyG)
    row, col = key // n, key % n
    deg = torch.bincount(row, minlength=n).to(torch.float32)  # in-degree, with the self-loop
    d = deg.pow(-0.5)
    val = d[row] * d[col]
    return torch.sparse_coo_tensor(torch.stack([row, col]), val, (n, n), check_invariants=False).coalesce()


class GraphEncoder(Encoder):
    modality: ClassVar[str] = NAME
    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled", "nodes"})


@ENCODERS.register("gcn")
class GCNEncoder(GraphEncoder):
    """``layers`` GCN layers of width ``hidden``, PReLU after each (DGI on Cora: one layer, 512)."""

    def __init__(self, in_dim: int, hidden: int = 512, layers: int = 1, impl: str = "sparse",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if impl not in ("sparse", "pyg"):
            raise ValueError(f"gcn impl must be 'sparse' or 'pyg', got {impl!r}")
        if layers < 1 or hidden < 1:
            raise ValueError("gcn needs layers >= 1 and hidden >= 1")
        self.impl, self.dropout, self.out_dim = impl, float(dropout), int(hidden)
        dims = [in_dim] + [hidden] * layers
        if impl == "pyg":
            conv = pyg().nn.GCNConv
            self.convs = nn.ModuleList(conv(a, b, cached=False) for a, b in zip(dims, dims[1:]))
        else:
            self.lins = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:]))
            self.biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in dims[1:])
            for lin in self.lins:
                nn.init.xavier_uniform_(lin.weight)
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(layers))
        self._adj: tuple[tuple, torch.Tensor] | None = None

    def adjacency(self, edge_index: torch.Tensor, n: int) -> torch.Tensor:
        # by content (a cheap weighted sum), not address: a freed edge set's memory may hold the next one
        key = (tuple(edge_index.shape), n, edge_index.device, int((edge_index[0] * 1_000_003 + edge_index[1]).sum()))
        if self._adj is None or self._adj[0] != key:
            self._adj = (key, normalised_adjacency(edge_index, n))
        return self._adj[1]

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        adj = self.adjacency(edge_index, n) if self.impl == "sparse" else None
        for i, act in enumerate(self.acts):
            x = nn.functional.dropout(x, self.dropout, self.training)
            if adj is not None:
                x = torch.sparse.mm(adj, self.lins[i](x)) + self.biases[i]
            else:
                x = self.convs[i](x, edge_index)
            x = act(x)
        return x


@ENCODERS.register("gat")
class GATEncoder(GraphEncoder):
    """GraphMAE's encoder: ``layers`` GATConv layers of ``heads`` x ``hidden // heads`` (concatenated), PReLU;
    ``init: reference`` (default) initialises them as GraphMAE's code does (``gat.reference_init``), ``pyg`` keeps
    PyG's default."""

    def __init__(self, in_dim: int, hidden: int = 512, heads: int = 4, layers: int = 2, feat_drop: float = 0.2,
                 attn_drop: float = 0.1, negative_slope: float = 0.2, impl: str = "csr",
                 init: str = "reference") -> None:
        super().__init__()
        from ssl_tasks.modalities.graph.gat import check_init, reference_init

        check_init("gat", init)
        if hidden % heads:
            raise ValueError(f"gat hidden ({hidden}) must be a multiple of heads ({heads})")
        if impl not in ("csr", "pyg"):
            raise ValueError(f"gat impl must be 'csr' or 'pyg', got {impl!r}")
        self.impl = impl
        self._graph: tuple[tuple, object] | None = None
        conv = pyg().nn.GATConv
        dims = [in_dim] + [hidden] * layers
        self.convs = nn.ModuleList(conv(a, hidden // heads, heads=heads, dropout=attn_drop,
                                        negative_slope=negative_slope) for a in dims[:-1])
        if init == "reference":
            for c in self.convs:
                reference_init(c)
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(layers))
        self.feat_drop, self.out_dim = float(feat_drop), int(hidden)

    def graph(self, edge_index: torch.Tensor, n: int) -> object:
        """GATConv's edge list (self-loops replaced) as an ``EdgeCSR``, cached per edge set."""
        from ssl_tasks.modalities.graph.gat import EdgeCSR, edge_key, gat_edges

        key = edge_key(edge_index, n)
        if self._graph is None or self._graph[0] != key:
            self._graph = (key, EdgeCSR(*gat_edges(edge_index, n), n, n))
        return self._graph[1]

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        if self.impl == "csr":
            from ssl_tasks.modalities.graph.gat import gat_forward

            g = self.graph(edge_index, x.shape[0])
            for conv, act in zip(self.convs, self.acts):
                x = act(gat_forward(conv, nn.functional.dropout(x, self.feat_drop, self.training), g))
            return x
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(nn.functional.dropout(x, self.feat_drop, self.training), edge_index))
        return x


def build_graph_encoder(name: str, in_dim: int, **kwargs: object) -> nn.Module:
    return ENCODERS.get(name)(in_dim, **kwargs)


__all__ = ["GATEncoder", "GCNEncoder", "build_graph_encoder", "normalise_features", "normalised_adjacency", "pyg"]
