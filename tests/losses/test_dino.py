"""DINO's loss against a slow reference; its centre buffer; the teacher-temperature warm-up."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ssl_tasks.losses.dino import DINOLoss, teacher_temperature


def logits(v: int, b: int = 4, k: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(v, b, k, generator=torch.Generator().manual_seed(seed)) * 3


def reference(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, t_temp: float,
              s_temp: float) -> float:
    """Explicit loops: every (teacher view i, student view j != i) pair, every sample, every prototype."""
    vt, b, k = teacher.shape
    total, pairs = 0.0, 0
    for i in range(vt):
        for j in range(student.shape[0]):
            if i == j:
                continue
            ce = 0.0
            for n in range(b):
                tz = [math.exp((float(teacher[i, n, c]) - float(center[0, c])) / t_temp) for c in range(k)]
                sz = [math.exp(float(student[j, n, c]) / s_temp) for c in range(k)]
                for c in range(k):
                    ce -= tz[c] / sum(tz) * math.log(sz[c] / sum(sz))
            total += ce / b
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("vs", [2, 5])
def test_matches_reference(vs: int) -> None:
    s, t = logits(vs, seed=1), logits(2, seed=2)
    loss = DINOLoss(6, student_temp=0.1)
    loss.center.copy_(torch.randn(1, 6, generator=torch.Generator().manual_seed(3)))
    center = loss.center.clone()
    assert loss(s, t, teacher_temp=0.05).item() == pytest.approx(reference(s, t, center, 0.05, 0.1), rel=1e-5)


def test_center_is_a_buffer_and_moves_toward_teacher_mean() -> None:
    loss = DINOLoss(6, center_momentum=0.9)
    assert "center" in dict(loss.named_buffers()) and "center" in loss.state_dict()
    assert not any(True for _ in loss.parameters())
    t = logits(2, seed=4) + 5.0
    mean = t.reshape(-1, 6).mean(dim=0, keepdim=True)  # (1, K)
    before = (loss.center - mean).norm()
    loss(logits(3, seed=5), t, teacher_temp=0.04)
    assert torch.allclose(loss.center, 0.1 * mean, atol=1e-6)  # 0.9 * 0 + 0.1 * mean
    assert (loss.center - mean).norm() < before
    loss(logits(3, seed=5), t, teacher_temp=0.04)
    assert torch.allclose(loss.center, 0.19 * mean, atol=1e-6)


def test_center_frozen_in_eval_mode_and_used_before_update() -> None:
    loss = DINOLoss(6)
    s, t = logits(3, seed=6), logits(2, seed=7)
    first = loss(s, t, 0.04).item()
    assert first == pytest.approx(reference(s, t, torch.zeros(1, 6), 0.04, 0.1), rel=1e-5)  # old (zero) centre
    loss.eval()
    c = loss.center.clone()
    loss(s, t, 0.04)
    assert torch.equal(loss.center, c)


def test_same_view_pairs_are_excluded() -> None:
    """With 2 student views, student view 0 learns from teacher view 1 only; teacher view 0 cannot touch its grad."""
    t = logits(2, seed=8)
    grads = []
    for bump in (0.0, 7.0):
        s = logits(2, seed=9).requires_grad_(True)
        t2 = t.clone()
        t2[0] += bump * torch.randn(4, 6, generator=torch.Generator().manual_seed(10))
        DINOLoss(6)(s, t2, 0.04).backward()
        grads.append(s.grad.clone())
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-7)  # same-view pair (0, 0) not in the loss
    assert not torch.allclose(grads[0][1], grads[1][1])  # pair (0, 1) is


def test_loss_is_cross_view_mean_not_including_same_view() -> None:
    s, t = logits(3, seed=11), logits(2, seed=12)
    out = DINOLoss(6)(s, t, 0.04).item()
    q = torch.softmax(t / 0.04, dim=-1)
    lp = torch.log_softmax(s / 0.1, dim=-1)
    ce = lambda i, j: float(-(q[i] * lp[j]).sum(-1).mean())  # noqa: E731
    assert out == pytest.approx((ce(0, 1) + ce(0, 2) + ce(1, 0) + ce(1, 2)) / 4, rel=1e-5)
    with_same = (ce(0, 0) + ce(0, 1) + ce(0, 2) + ce(1, 0) + ce(1, 1) + ce(1, 2)) / 6
    assert out != pytest.approx(with_same, rel=1e-3)


def test_gradient_reaches_student_only() -> None:
    s, t = logits(3).requires_grad_(True), logits(2, seed=1).requires_grad_(True)
    DINOLoss(6)(s, t, 0.04).backward()
    assert s.grad is not None and t.grad is None


def test_teacher_temperature_warmup() -> None:
    assert teacher_temperature(0.0, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert teacher_temperature(0.15, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temperature(0.3, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temperature(0.9, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temperature(0.0, 0.04, 0.07, 0.0) == pytest.approx(0.07)  # no warm-up
    assert teacher_temperature(0.15) == pytest.approx(0.055)  # the paper's defaults


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="student_temp"):
        DINOLoss(6, student_temp=0.0)
    with pytest.raises(ValueError, match="views"):
        DINOLoss(6)(logits(1), logits(2), 0.04)
    with pytest.raises(ValueError, match="teacher_temp"):
        DINOLoss(6)(logits(2), logits(2), 0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, s: torch.Tensor, t: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    b = t.shape[1] // world
    loss = DINOLoss(6, gather_distributed=True)
    loss(s[:, rank * b : (rank + 1) * b], t[:, rank * b : (rank + 1) * b], 0.04)
    out[rank] = loss.center.clone()
    dist.destroy_process_group()


def test_center_is_averaged_across_workers() -> None:
    """Two gloo workers with half the batch each end with the centre one process gets from all of it."""
    s, t = logits(3, b=8, seed=13), logits(2, b=8, seed=14)
    full = DINOLoss(6, gather_distributed=False)
    full(s, t, 0.04)
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), s, t, out), nprocs=2, join=True)
    assert torch.allclose(out[0], full.center, atol=1e-6) and torch.allclose(out[1], full.center, atol=1e-6)
