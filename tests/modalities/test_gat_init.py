"""GraphMAE's GAT initialisation (``gat.reference_init``), the default of the ``gat`` encoder and of GraphMAE's
decoder: with PyG's default init GraphMAE reached 0.795 on Cora over 6 seeds, with this one 0.827-0.833, as the
authors' code does (bench/RESULTS.md section 8). The spreads are checked against xavier-normal's formula, the
option against a typo, and ``pyg`` against PyG's own init (bitwise, from one seed)."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_tasks.core.config import build
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.graph.encoders import GATEncoder, pyg
from ssl_tasks.modalities.graph.feed import GraphDataSpec
from ssl_tasks.objectives import OBJECTIVES


def xavier_normal_std(w: torch.Tensor, gain: float) -> float:
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def check_reference(conv: torch.nn.Module) -> None:
    gain = math.sqrt(2.0)
    for name, w in (("lin", conv.lin.weight), ("att_src", conv.att_src), ("att_dst", conv.att_dst)):
        want = xavier_normal_std(w, gain)
        got = w.detach().std().item()
        assert abs(got - want) < 0.1 * want, (name, got, want)
        assert abs(w.detach().mean().item()) < 0.1 * want, name  # normal around 0, not uniform's bound
    assert conv.bias is None or torch.count_nonzero(conv.bias) == 0


def graphmae(init: str | None) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {} if init is None else {"init": init}
    enc = GATEncoder(600, hidden=256, heads=4, layers=2, **kw)
    cls = OBJECTIVES.get("graphmae")
    return cls(enc, build(cls.Config, kw, "graphmae"), GraphDataSpec(50, 600))


def test_reference_init_is_the_default_for_encoder_and_decoder() -> None:
    obj = graphmae(None)
    convs = [m for m in obj.modules() if isinstance(m, pyg().nn.GATConv)]
    assert len(convs) == 3  # two encoder layers and the decoder
    for conv in convs:
        check_reference(conv)
    # the spreads differ from PyG's default by more than the tolerance above: the check can fail
    first = graphmae("pyg").encoder.convs[0].lin.weight.detach().std().item()
    assert abs(first - xavier_normal_std(convs[0].lin.weight, math.sqrt(2.0))) > 0.2 * first


def test_pyg_init_is_pygs_own() -> None:
    obj = graphmae("pyg")
    torch.manual_seed(0)
    plain = pyg().nn.GATConv(600, 64, heads=4, dropout=0.1, negative_slope=0.2)
    assert torch.equal(obj.encoder.convs[0].lin.weight, plain.lin.weight)
    assert torch.equal(obj.encoder.convs[0].att_src, plain.att_src)


def test_unknown_init_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="gat init must be 'reference'.*got 'xavier'"):
        GATEncoder(20, hidden=16, heads=2, init="xavier")
    # through params (runs.<name>.objective_kwargs): one user error naming the key and the value
    with pytest.raises(UserError, match="graphmae init must be 'reference'.*got 'xavier'"):
        build(OBJECTIVES.get("graphmae").Config, {"init": "xavier"}, "runs.graphmae.objective_kwargs")
