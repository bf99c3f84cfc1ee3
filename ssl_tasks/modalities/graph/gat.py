"""A faster forward for PyG's ``GATConv`` on CPU: the same parameters, the same random draws, the same maths.

PyG's ``GATConv`` materialises one message per edge and head (``alpha * x_j``, an ``(E, heads, C)`` tensor), sums
them with ``scatter_add`` and, in the backward pass, materialises ``(E, heads, C)`` tensors twice more. On Cora's
GraphMAE (2 x 4 heads x 128 and a 1433-wide decoder) those edge tensors, not the matrix products, were most of a
training step on this CPU (bench/RESULTS.md section 8). Here the attention coefficients are computed exactly as
``GATConv`` computes them (``alpha_j + alpha_i``, leaky ReLU, ``torch_geometric.utils.softmax`` over each node's
incoming edges, dropout on the ``(E, heads)`` coefficients in PyG's edge order, so a seeded run draws the same
masks), and the weighted sum over neighbours is one sparse CSR product (``EdgeCSR`` / ``aggregate``) whose
backward is the transposed CSR product for the node features and a sampled dense product
(``torch.sparse.sampled_addmm``: the dots ``<grad_i, h_j>`` on the edges only) for the coefficients.

``gat_forward(conv, x, graph)`` runs a ``GATConv`` module's forward this way (its ``lin``, ``att_src``, ``att_dst``,
``bias``; no edge features, no residual), equal to ``conv(x, edge_index)`` up to float summation order
(tests/modalities/test_gat_fast.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class EdgeCSR:
    """An edge list ``src -> dst`` (message from ``src`` to ``dst``) as CSR index arrays for the products
    ``out[dst] += w_e * h[src]`` and its transpose, with ``heads`` copies laid out block-diagonally (head ``k`` owns
    rows ``k * n_dst ...`` and columns ``k * n_src ...``) so that all heads are one product. Edge weights are given in
    the edge list's order; ``perm`` / ``perm_t`` reorder them to the CSR layouts. Duplicate edges are kept and summed,
    as PyG's ``scatter_add`` sums them."""

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n_src: int, n_dst: int) -> None:
        if src.shape != dst.shape or src.dim() != 1:
            raise ValueError("EdgeCSR needs 1-d src and dst of the same length")
        self.src, self.dst, self.n_src, self.n_dst = src, dst, int(n_src), int(n_dst)
        self.num_edges = int(src.numel())
        self.perm = torch.argsort(dst * self.n_src + src, stable=True)  # rows: dst
        self.perm_t = torch.argsort(src * self.n_dst + dst, stable=True)  # rows: src (the transpose)
        self._heads: dict[int, tuple] = {}

    def layout(self, heads: int) -> tuple:
        """(perm, crow, col, perm_t, crow_t, col_t) for ``heads`` block-diagonal copies."""
        if heads not in self._heads:
            e, dev = self.num_edges, self.src.device
            off_e = (torch.arange(heads, device=dev) * e).view(-1, 1)
            off_s = (torch.arange(heads, device=dev) * self.n_src).view(-1, 1)
            off_d = (torch.arange(heads, device=dev) * self.n_dst).view(-1, 1)
            # edge weights arrive head-major: position k * E + e is edge e of head k
            perm = (self.perm.view(1, -1) + off_e).reshape(-1)
            perm_t = (self.perm_t.view(1, -1) + off_e).reshape(-1)
            src_rows = (self.src.view(1, -1) + off_s).reshape(-1)  # in edge-list order, head-major
            dst_rows = (self.dst.view(1, -1) + off_d).reshape(-1)
            crow = _crow(dst_rows[perm], heads * self.n_dst)
            crow_t = _crow(src_rows[perm_t], heads * self.n_src)
            self._heads[heads] = (perm, crow, src_rows[perm], perm_t, crow_t, dst_rows[perm_t])
        return self._heads[heads]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _crow(sorted_rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    counts = torch.bincount(sorted_rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class _Aggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights: torch.Tensor, h: torch.Tensor, g: EdgeCSR) -> torch.Tensor:  # noqa: ANN001
        heads, c = weights.shape[1], h.shape[-1]
        perm, crow, col, *_ = g.layout(heads)
        w = weights.t().reshape(-1)
        hh = h.transpose(0, 1).reshape(heads * g.n_src, c)
        a = _csr(crow, col, w[perm], (heads * g.n_dst, heads * g.n_src))
        ctx.save_for_backward(w, hh)
        ctx.g, ctx.heads = g, heads
        return (a @ hh).view(heads, g.n_dst, c).transpose(0, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        w, hh = ctx.saved_tensors
        g, heads = ctx.g, ctx.heads
        perm, crow, col, perm_t, crow_t, col_t = g.layout(heads)
        go = grad.transpose(0, 1).reshape(heads * g.n_dst, -1)
        grad_w = grad_h = None
        if ctx.needs_input_grad[0]:  # d/dw_e = <grad[dst_e], h[src_e]>, per head: (grad h^T) on the edges only
            pattern = _csr(crow, col, w.new_ones(w.numel()), (heads * g.n_dst, heads * g.n_src))
            dots = torch.sparse.sampled_addmm(pattern, go, hh.t(), beta=0.0).values()
            grad_w = torch.empty_like(w)
            grad_w[perm] = dots
            grad_w = grad_w.view(heads, g.num_edges).t()
        if ctx.needs_input_grad[1]:
            at = _csr(crow_t, col_t, w[perm_t], (heads * g.n_src, heads * g.n_dst))
            grad_h = (at @ go).view(heads, g.n_src, -1).transpose(0, 1)
        return grad_w, grad_h, None


def aggregate(weights: torch.Tensor, h: torch.Tensor, g: EdgeCSR) -> torch.Tensor:
    """``out[d, k] = sum over edges e = (s -> d) of weights[e, k] * h[s, k]``: weights (E, heads) in ``g``'s edge
    order, h (n_src, heads, C) -> (n_dst, heads, C); differentiable in both."""
    if weights.shape != (g.num_edges, weights.shape[1]) or h.shape[:2] != (g.n_src, weights.shape[1]):
        raise ValueError(f"aggregate: weights {tuple(weights.shape)} / h {tuple(h.shape)} do not fit "
                         f"{g.num_edges} edges, {g.n_src} source nodes")
    return _Aggregate.apply(weights, h.contiguous(), g)


def reference_init(conv: nn.Module) -> None:
    """GraphMAE's GAT initialisation (Hou et al. 2022, the authors' ``gat.py`` ``reset_parameters``; their PyG port
    overrides PyG's default the same way): ``xavier_normal_`` with gain ``calculate_gain('relu')`` = sqrt(2) on the
    linear weight and on both attention vectors (``(1, H, C)``: fans H*C and C), bias 0. PyG's own default
    (xavier-uniform, gain 1) left GraphMAE on Cora at 0.795 over 6 seeds; this one gives 0.827-0.833, as the
    authors' code does on the same data (bench/RESULTS.md section 8)."""
    gain = nn.init.calculate_gain("relu")
    for w in (conv.lin.weight, conv.att_src, conv.att_dst):
        nn.init.xavier_normal_(w, gain=gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def check_init(name: str, init: str) -> None:
    if init not in ("reference", "pyg"):
        raise ValueError(f"{name} init must be 'reference' (GraphMAE's) or 'pyg' (PyG's default), got {init!r}")


def gat_edges(edge_index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GATConv's edge list: the given self-loops removed, one self-loop per node appended (``remove_self_loops``
    then ``add_self_loops``), as (src, dst)."""
    ei = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(n, device=edge_index.device)
    return torch.cat([ei[0], loops]), torch.cat([ei[1], loops])


def edge_key(edge_index: torch.Tensor, n: int) -> tuple:
    """A cheap content key for an edge set (not its address: a freed edge set's memory may hold the next one)."""
    return (tuple(edge_index.shape), n, edge_index.device, int((edge_index[0] * 1_000_003 + edge_index[1]).sum()))


def attention(conv: nn.Module, a_src: torch.Tensor, a_dst: torch.Tensor, src: torch.Tensor,
              dst: torch.Tensor, n: int) -> torch.Tensor:
    """GATConv's ``edge_update``: (E, heads) coefficients from per-node scores, softmax over each node's incoming
    edges, attention dropout (the same draw as GATConv's)."""
    from ssl_tasks.modalities.graph.encoders import pyg

    alpha = nn.functional.leaky_relu(a_src.index_select(0, src) + a_dst.index_select(0, dst), conv.negative_slope)
    alpha = pyg().utils.softmax(alpha, dst, num_nodes=n)
    return nn.functional.dropout(alpha, p=conv.dropout, training=conv.training)


def check_plain(conv: nn.Module) -> None:
    if getattr(conv, "lin", None) is None or conv.lin_edge is not None or conv.res is not None \
            or not conv.add_self_loops:
        raise ValueError("gat_forward supports GATConv with one shared lin, self-loops, no edge features and no "
                         "residual")


def gat_forward(conv: nn.Module, x: torch.Tensor, graph: EdgeCSR) -> torch.Tensor:
    """``conv(x, edge_index)`` for a PyG ``GATConv`` ``conv``, with ``graph`` = ``EdgeCSR(*gat_edges(...))``."""
    check_plain(conv)
    heads, c, n = conv.heads, conv.out_channels, x.shape[0]
    h = conv.lin(x).view(-1, heads, c)
    a_src, a_dst = (h * conv.att_src).sum(-1), (h * conv.att_dst).sum(-1)
    alpha = attention(conv, a_src, a_dst, graph.src, graph.dst, n)
    out = aggregate(alpha, h, graph)
    out = out.reshape(n, heads * c) if conv.concat else out.mean(dim=1)
    return out + conv.bias if conv.bias is not None else out


__all__ = ["EdgeCSR", "aggregate", "attention", "edge_key", "gat_edges", "gat_forward"]
