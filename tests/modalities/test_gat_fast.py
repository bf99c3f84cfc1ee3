"""The CSR GAT path (modalities/graph/gat.py, ``gat`` encoder ``impl: csr``, GraphMAE ``impl: csr``) against PyG's
``GATConv`` and the original GraphMAE forward (``impl: pyg``): the same parameters and random draws must give the
same outputs, loss and gradients to float tolerance."""

from __future__ import annotations

import pytest
import torch

from ssl_tasks.core.config import build
from ssl_tasks.modalities.graph.encoders import GATEncoder, pyg
from ssl_tasks.modalities.graph.feed import GraphDataSpec
from ssl_tasks.modalities.graph.gat import EdgeCSR, aggregate, gat_edges, gat_forward
from ssl_tasks.objectives import OBJECTIVES


def random_graph(n: int, e: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    # a few duplicate edges and given self-loops, which GATConv keeps / replaces
    return torch.cat([ei, ei[:, :5], torch.tensor([[3, 7], [3, 7]])], dim=1)


def test_aggregate_matches_dense_product_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    n_src, n_dst, e, heads, c = 9, 6, 30, 3, 4
    src = torch.randint(0, n_src, (e,), generator=g)
    dst = torch.randint(0, n_dst, (e,), generator=g)
    src[:3], dst[:3] = src[3], dst[3]  # duplicates are summed
    graph = EdgeCSR(src, dst, n_src, n_dst)
    w = torch.rand(e, heads, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(n_src, heads, c, generator=g, dtype=torch.float64, requires_grad=True)
    dense = torch.zeros(heads, n_dst, n_src, dtype=torch.float64).index_put(
        (torch.arange(heads).repeat_interleave(e), dst.repeat(heads), src.repeat(heads)), w.t().reshape(-1),
        accumulate=True)
    ref = torch.einsum("kds,skc->dkc", dense, h)
    assert torch.allclose(aggregate(w, h, graph), ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: aggregate(a, b, graph), (w, h))


def test_aggregate_rejects_mismatched_shapes() -> None:
    graph = EdgeCSR(torch.tensor([0, 1]), torch.tensor([1, 0]), 2, 2)
    with pytest.raises(ValueError, match="do not fit"):
        aggregate(torch.rand(3, 1), torch.rand(2, 1, 4), graph)


@pytest.mark.parametrize("concat", [True, False])
def test_gat_forward_equals_gatconv(concat: bool) -> None:
    n, ei = 40, random_graph(40, 150, 1)
    torch.manual_seed(0)
    conv = pyg().nn.GATConv(12, 5, heads=3, concat=concat, dropout=0.3)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(n, 12)
    graph = EdgeCSR(*gat_edges(ei, n), n, n)
    outs = []
    for fn in (lambda: conv(x, ei), lambda: gat_forward(conv, x, graph)):
        conv.zero_grad()
        torch.manual_seed(5)  # the attention dropout's draw
        out = fn()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in conv.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_gat_encoder_impls_agree_and_cache_per_edge_set() -> None:
    n, ei = 50, random_graph(50, 200, 2)
    x = torch.rand(n, 20)
    encs = {}
    for impl in ("pyg", "csr"):
        torch.manual_seed(0)
        encs[impl] = GATEncoder(20, hidden=16, heads=4, layers=2, impl=impl)
    assert encs["pyg"].state_dict().keys() == encs["csr"].state_dict().keys()
    for a, b in zip(encs["pyg"].state_dict().values(), encs["csr"].state_dict().values()):
        assert torch.equal(a, b)  # the same parameters from the same seed
    results = {}
    for impl, enc in encs.items():
        enc.train()
        torch.manual_seed(3)
        out = enc(x, ei)
        out.pow(2).sum().backward()
        results[impl] = (out.detach(), {k: p.grad for k, p in enc.named_parameters()})
    assert torch.allclose(results["pyg"][0], results["csr"][0], atol=1e-5)
    for k, grad in results["pyg"][1].items():
        assert torch.allclose(grad, results["csr"][1][k], atol=1e-5, rtol=1e-4), k
    enc = encs["csr"]
    g1 = enc.graph(ei, n)
    assert enc.graph(ei.clone(), n) is g1  # same content: the cached layout
    assert enc.graph(ei[:, :-10], n) is not g1  # another edge set: rebuilt
    with pytest.raises(ValueError, match="impl"):
        GATEncoder(20, hidden=16, heads=4, impl="dense")


def graphmae(impl: str, in_dim: int, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = GATEncoder(in_dim, hidden=16, heads=2, layers=2, impl=impl)
    cls = OBJECTIVES.get("graphmae")
    return cls(enc, build(cls.Config, {"impl": impl, **kwargs}, "graphmae"), GraphDataSpec(60, in_dim))


@pytest.mark.parametrize("kwargs", [{}, {"remask": False, "decoder_heads": 2}, {"replace_rate": 0.0}])
def test_graphmae_csr_step_equals_pyg_step(kwargs: dict) -> None:
    """One seeded training step: the same loss, the same gradients for every parameter (mask token included), and
    the same parameters after an Adam step."""
    n, f = 60, 24
    ei = random_graph(n, 240, 4)
    x = torch.rand(n, f) * (torch.rand(n, f) < 0.3)
    x = x / x.sum(1, keepdim=True).clamp_min(1e-9)
    steps = {}
    for impl in ("pyg", "csr"):
        obj = graphmae(impl, f, **kwargs)
        with torch.no_grad():
            obj.mask_token.normal_()  # non-zero, so its path shows in the loss
        opt = torch.optim.Adam(obj.parameters(), lr=1e-2, weight_decay=2e-4)
        obj.train()
        torch.manual_seed(11)
        res = obj(obj.make_views((x, ei), torch.Generator().manual_seed(7)))
        opt.zero_grad()
        res.loss.backward()
        grads = {k: p.grad.clone() for k, p in obj.named_parameters()}
        opt.step()
        steps[impl] = (float(res.loss.detach()), grads, {k: p.detach().clone() for k, p in obj.named_parameters()},
                       res.embeddings[0])
    (loss_a, grad_a, par_a, emb_a), (loss_b, grad_b, par_b, emb_b) = steps["pyg"], steps["csr"]
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert torch.allclose(emb_a, emb_b, atol=1e-5)
    assert grad_a.keys() == grad_b.keys() and grad_a["mask_token"].abs().sum() > 0
    for k in grad_a:
        assert torch.allclose(grad_a[k], grad_b[k], atol=1e-6, rtol=1e-3), k
        assert torch.allclose(par_a[k], par_b[k], atol=1e-6), k


def test_graphmae_rejects_unknown_impl() -> None:
    with pytest.raises(ValueError, match="impl"):
        graphmae("sparse", 8)
