"""Linear probe on synthetic features: separable, random labels, seeded repeats."""

from __future__ import annotations

import torch

from ssl_tasks.evaluation import linear_probe_top1


def _blobs(n: int, d: int, c: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=torch.Generator().manual_seed(123)) * 5  # (C, D)
    y = torch.randint(0, c, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g), y  # (N, D), (N,)


def test_separable_blobs_near_perfect() -> None:
    (x_tr, y_tr), (x_te, y_te) = _blobs(2000, 32, 5, 1.0, 0), _blobs(500, 32, 5, 1.0, 1)
    acc = linear_probe_top1(x_tr, y_tr, x_te, y_te, num_classes=5, epochs=20, batch_size=256)
    assert acc > 0.98


def test_random_labels_at_chance() -> None:
    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.randn(2000, 32, generator=g), torch.randn(1000, 32, generator=g)
    y_tr, y_te = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    acc = linear_probe_top1(x_tr, y_tr, x_te, y_te, num_classes=10, epochs=20, batch_size=256)
    assert 0.04 < acc < 0.18


def test_same_seed_same_result() -> None:
    (x_tr, y_tr), (x_te, y_te) = _blobs(1000, 16, 4, 6.0, 2), _blobs(400, 16, 4, 6.0, 3)
    kw = dict(num_classes=4, epochs=5, batch_size=128)
    a = linear_probe_top1(x_tr, y_tr, x_te, y_te, seed=7, **kw)
    b = linear_probe_top1(x_tr, y_tr, x_te, y_te, seed=7, **kw)
    assert a == b
    assert 0.3 < a < 1.0  # overlapping blobs: not trivially perfect, so the check has teeth
