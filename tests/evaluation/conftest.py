"""Shared real data for the evaluation tests: sklearn's 8x8 digits as uint8 images."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """These workloads are tiny (8x8 images, small batches): per-op overhead dominates, and
    2 intra-op threads stall badly when other processes share the cores (measured 0.5 s vs
    20 s for one fine-tune run on a busy 2-core machine). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="session")
def digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train_x, train_y), (test_x, test_y)): 1200 / 597 images, uint8 (N, 1, 8, 8), fixed split."""
    d = load_digits()
    x = np.round(d.images * 255 / 16).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    tr, te = order[:1200], order[1200:]
    return (x[tr], y[tr]), (x[te], y[te])

