"""Weighted k-NN classification on frozen features.

The non-parametric classifier of Wu et al. 2018 (InstDisc, arXiv:1805.01978) as used by
DINO (Caron et al. 2021, arXiv:2104.14294): cosine similarity, the k nearest training
samples vote for their class with weight exp(sim / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.float()


def knn_predict(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted class per test row, int64 (M,), from train (N, D) / (N,) and test (M, D).

    Test rows are processed ``chunk`` at a time, so memory is O(chunk * N); k is clamped to N.
    Floating features keep their dtype (float64 in, float64 similarities).
    """
    if k < 1 or temperature <= 0 or chunk < 1:
        raise ValueError(f"need k >= 1, temperature > 0, chunk >= 1; got {k}, {temperature}, {chunk}")
    if len(train_f) == 0:
        raise ValueError("k-NN needs at least one training sample")
    k = min(k, len(train_f))
    bank = F.normalize(_as_float(train_f), dim=1)  # (N, D)
    labels = torch.as_tensor(train_y, device=bank.device).long()  # (N,)
    preds: list[torch.Tensor] = []
    for s in range(0, len(test_f), chunk):
        q = F.normalize(_as_float(test_f[s : s + chunk]).to(bank), dim=1)  # (b, D)
        sim = q @ bank.T  # (b, N)
        top_sim, top_idx = sim.topk(k, dim=1)  # (b, k)
        weight = (top_sim / temperature).exp()  # (b, k)
        votes = torch.zeros(len(q), num_classes, dtype=weight.dtype, device=bank.device)
        votes.scatter_add_(1, labels[top_idx], weight)  # (b, C)
        preds.append(votes.argmax(dim=1))
    if not preds:
        return torch.empty(0, dtype=torch.long, device=bank.device)
    return torch.cat(preds)  # (M,)


def knn_top1(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted k-NN classifier (k=20, T=0.07 as in DINO)."""
    pred = knn_predict(train_f, train_y, test_f, num_classes=num_classes, k=k, temperature=temperature, chunk=chunk)
    target = torch.as_tensor(test_y, device=pred.device).long()
    return (pred == target).float().mean().item()
