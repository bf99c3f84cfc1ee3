"""Weighted k-NN against a slow, obvious per-sample reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_tasks.evaluation import knn_predict, knn_top1


def reference_predict(
    train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, num_classes: int, k: int, t: float
) -> list[int]:
    """One test sample at a time: cosine sims, sort, sum exp(sim / T) per class, argmax."""
    preds = []
    bank = [row / np.linalg.norm(row) for row in train_f]
    for q in test_f:
        q = q / np.linalg.norm(q)
        sims = [(float(np.dot(q, b)), j) for j, b in enumerate(bank)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for sim, j in sims[: min(k, len(bank))]:
            votes[int(train_y[j])] += math.exp(sim / t)
        preds.append(int(np.argmax(votes)))
    return preds


@pytest.mark.parametrize(("k", "temperature", "chunk"), [(20, 0.07, 1024), (5, 0.5, 7), (1, 0.1, 3), (500, 0.07, 16)])
def test_matches_reference(k: int, temperature: float, chunk: int) -> None:
    rng = np.random.default_rng(k)
    train_f, test_f = rng.normal(size=(300, 16)), rng.normal(size=(60, 16))
    train_y, test_y = rng.integers(0, 5, 300), rng.integers(0, 5, 60)
    expected = reference_predict(train_f, train_y, test_f, 5, k, temperature)
    tr_f, tr_y, te_f, te_y = (torch.from_numpy(a) for a in (train_f, train_y, test_f, test_y))
    kw = dict(num_classes=5, k=k, temperature=temperature, chunk=chunk)
    pred = knn_predict(tr_f, tr_y, te_f, **kw)
    assert pred.dtype == torch.long
    assert pred.tolist() == expected
    acc = knn_top1(tr_f, tr_y, te_f, te_y, **kw)
    assert acc == pytest.approx(np.mean(np.array(expected) == test_y))


def test_k_larger_than_train_size() -> None:
    rng = np.random.default_rng(1)
    train_f, test_f = torch.from_numpy(rng.normal(size=(4, 8))), torch.from_numpy(rng.normal(size=(10, 8)))
    train_y = torch.tensor([0, 1, 2, 1])
    pred = knn_predict(train_f, train_y, test_f, num_classes=3, k=50)
    assert pred.tolist() == reference_predict(train_f.numpy(), train_y.numpy(), test_f.numpy(), 3, 50, 0.07)


def test_identical_features_k1_is_perfect() -> None:
    f = torch.randn(200, 32, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(1))
    assert knn_top1(f, y, f, y, num_classes=10, k=1) == 1.0


def test_deterministic_and_chunk_invariant() -> None:
    g = torch.Generator().manual_seed(2)
    train_f, test_f = torch.randn(500, 24, generator=g), torch.randn(130, 24, generator=g)
    train_y = torch.randint(0, 7, (500,), generator=g)
    a = knn_predict(train_f, train_y, test_f, num_classes=7, chunk=1024)
    b = knn_predict(train_f, train_y, test_f, num_classes=7, chunk=17)
    assert torch.equal(a, b)
    assert torch.equal(a, knn_predict(train_f, train_y, test_f, num_classes=7, chunk=1024))
