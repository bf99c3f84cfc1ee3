"""NT-Xent against a slow, obvious reference and its known properties."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ssl_tasks.losses.nt_xent import NTXentLoss


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Loop over the 2B anchors: -log(exp(s_pos/t) / sum_{k != i} exp(s_ik/t))."""
    z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)]).double()
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / denom)
    return total / n


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_matches_reference(t: float) -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert NTXentLoss(t)(z1, z2).item() == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5)


def test_symmetric_in_views() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    loss = NTXentLoss(0.3)
    assert loss(z1, z2).item() == pytest.approx(loss(z2, z1).item(), rel=1e-6)


def test_closed_form_identical_embeddings() -> None:
    """All 2B embeddings equal: every logit is 1/t, so the loss is log(2B - 1)."""
    b = 6
    z = torch.ones(b, 3)
    assert NTXentLoss(0.2)(z, z).item() == pytest.approx(math.log(2 * b - 1), rel=1e-6)


def test_perfect_pairs_orthogonal_negatives_approach_zero() -> None:
    z = torch.eye(4)
    assert NTXentLoss(0.01)(z, z).item() < 1e-6


def test_invalid_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, z1: torch.Tensor, z2: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    b = z1.shape[0] // world
    a1 = z1[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    a2 = z2[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    loss = NTXentLoss(0.5, gather_distributed=True)(a1, a2)
    loss.backward()
    out[rank] = (loss.item(), a1.grad.clone(), a2.grad.clone())
    dist.destroy_process_group()


def test_gathered_negatives_equal_full_batch() -> None:
    """Two gloo workers with half the batch each see the same negatives as one process with all of it."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    full = NTXentLoss(0.5, gather_distributed=False)
    f1, f2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    ref = full(f1, f2)
    ref.backward()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), z1, z2, out), nprocs=2, join=True)
    mean_loss = (out[0][0] + out[1][0]) / 2
    assert mean_loss == pytest.approx(ref.item(), rel=1e-5)
    # Each rank's local gradient (of its local mean) x 1/2 sums to the full-batch gradient, as DDP averages.
    g1 = torch.cat([out[0][1], out[1][1]]) / 2
    assert torch.allclose(g1, f1.grad, atol=1e-5)
