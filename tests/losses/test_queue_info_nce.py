"""MoCo's queue (order, size) and its InfoNCE loss against a reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_tasks.losses.queue_info_nce import FeatureQueue, QueueInfoNCELoss


def rows(start: int, n: int, d: int = 3) -> torch.Tensor:
    return torch.arange(start, start + n).float().view(-1, 1).repeat(1, d)


def test_queue_is_fifo_with_fixed_size() -> None:
    q = FeatureQueue(size=5, dim=3)
    q.enqueue(rows(0, 3))
    assert int(q.filled) == 3 and q.queue.shape == (5, 3)
    q.enqueue(rows(3, 3))  # wraps: 0 is evicted
    assert int(q.filled) == 5
    assert q.ordered()[:, 0].tolist() == [1, 2, 3, 4, 5]
    q.enqueue(rows(6, 2))
    assert q.ordered()[:, 0].tolist() == [3, 4, 5, 6, 7]
    assert q.queue.shape == (5, 3)


def test_queue_keeps_newest_when_batch_exceeds_size() -> None:
    q = FeatureQueue(size=4, dim=3)
    q.enqueue(rows(0, 10))
    assert q.ordered()[:, 0].tolist() == [6, 7, 8, 9]


def test_queue_is_checkpointed_as_buffer() -> None:
    q = FeatureQueue(size=4, dim=2)
    q.enqueue(rows(0, 3, 2))
    state = q.state_dict()
    assert {"queue", "ptr", "filled"} <= set(state)
    q2 = FeatureQueue(size=4, dim=2)
    q2.load_state_dict(state)
    assert torch.equal(q2.ordered(), q.ordered())


def test_info_nce_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    qv, kv, queue = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(10, 6, generator=g)
    t = 0.2
    out = QueueInfoNCELoss(t)(qv, kv, queue).item()
    qn, kn = F.normalize(qv, dim=1), F.normalize(kv, dim=1)
    ref = 0.0
    for i in range(4):
        pos = math.exp(float(qn[i] @ kn[i]) / t)
        neg = sum(math.exp(float(qn[i] @ queue[j]) / t) for j in range(10))
        ref += -math.log(pos / (pos + neg))
    assert out == pytest.approx(ref / 4, rel=1e-5)


def test_info_nce_gradient_only_to_queries() -> None:
    qv, kv = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    queue = torch.randn(5, 4, requires_grad=True)
    QueueInfoNCELoss(0.2)(qv, kv, queue).backward()
    assert qv.grad is not None and kv.grad is None and queue.grad is None
