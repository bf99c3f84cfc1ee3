"""MoCo v3's symmetric in-batch InfoNCE: reference, symmetry, closed form, the 2-tau scale, key gradients."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ssl_tasks.losses.batch_info_nce import BatchInfoNCELoss


def feats(n: int = 5, d: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def reference_ctr(q: torch.Tensor, k: torch.Tensor, t: float) -> float:
    """-log softmax of each query's own key among all keys, averaged, times 2t; explicit loops."""
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        scores = [math.exp(float(qn[i] @ kn[j]) / t) for j in range(k.shape[0])]
        total += -math.log(scores[i] / sum(scores))
    return 2 * t * total / q.shape[0]


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_matches_reference(t: float) -> None:
    q1, q2, k1, k2 = (feats(seed=s) for s in range(4))
    out = BatchInfoNCELoss(t)(q1, q2, k1, k2).item()
    assert out == pytest.approx(reference_ctr(q1, k2, t) + reference_ctr(q2, k1, t), rel=1e-5)


def test_symmetric_in_the_two_views() -> None:
    q1, q2, k1, k2 = (feats(seed=s) for s in range(4))
    loss = BatchInfoNCELoss(0.2)
    assert loss(q1, q2, k1, k2).item() == pytest.approx(loss(q2, q1, k2, k1).item(), rel=1e-6)


def test_closed_form_for_identical_orthogonal_keys() -> None:
    """q_i = k_i = e_i: logits 1/t on the diagonal, 0 elsewhere, so ctr = 2t log(1 + (B-1) exp(-1/t))."""
    b, t = 4, 0.2
    e = torch.eye(b, 8)[:b] * 3.0  # scale is irrelevant: features are normalised
    out = BatchInfoNCELoss(t)(e, e, e, e).item()
    one = 2 * t * math.log(1 + (b - 1) * math.exp(-1 / t))
    assert out == pytest.approx(2 * one, rel=1e-5)
    assert out < 0.02  # near the minimum (0) for well-separated pairs
    shuffled = BatchInfoNCELoss(t)(e, e, e.roll(1, 0), e.roll(1, 0)).item()
    assert shuffled > 1.0  # wrong keys are far from it


def test_scaled_by_two_tau() -> None:
    q, k = feats(seed=5), feats(seed=6)
    for t in (0.1, 0.2, 0.5):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / t
        plain = F.cross_entropy(logits, torch.arange(5)).item()
        assert BatchInfoNCELoss(t).contrastive(q, k).item() == pytest.approx(2 * t * plain, rel=1e-5)


def test_gradient_only_to_queries() -> None:
    q1, q2, k1, k2 = (feats(seed=s).requires_grad_(True) for s in range(4))
    BatchInfoNCELoss(0.2)(q1, q2, k1, k2).backward()
    assert q1.grad is not None and q2.grad is not None
    assert k1.grad is None and k2.grad is None


def test_invalid_temperature_is_rejected() -> None:
    with pytest.raises(ValueError, match="temperature"):
        BatchInfoNCELoss(0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, qs: torch.Tensor, ks: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    b = qs.shape[1] // world
    q1, q2, k1, k2 = (t[rank * b : (rank + 1) * b].clone() for t in (*qs, *ks))
    q1.requires_grad_(True)
    loss = BatchInfoNCELoss(0.2, gather_distributed=True)(q1, q2, k1, k2)
    loss.backward()
    out[rank] = (loss.item(), q1.grad.clone())
    dist.destroy_process_group()


def test_gathered_keys_equal_full_batch() -> None:
    """Two gloo workers with half the batch each contrast against the same keys as one process with all of it."""
    qs, ks = torch.stack([feats(8, seed=7), feats(8, seed=8)]), torch.stack([feats(8, seed=9), feats(8, seed=10)])
    q1 = qs[0].clone().requires_grad_(True)
    ref = BatchInfoNCELoss(0.2, gather_distributed=False)(q1, qs[1], ks[0], ks[1])
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), qs, ks, out), nprocs=2, join=True)
    assert (out[0][0] + out[1][0]) / 2 == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(torch.cat([out[0][1], out[1][1]]) / 2, q1.grad, atol=1e-6)  # as DDP averages
