"""Linear probe: a single linear layer trained on frozen, standardised features.

The linear evaluation protocol (Zhang et al. 2016, arXiv:1603.08511) as run by
SimCLR (Chen et al. 2020, arXiv:2002.05709) and MAE (He et al. 2021, arXiv:2111.06377):
frozen features, one ``nn.Linear`` (weights ~ N(0, 0.01), zero bias), cross entropy,
here with AdamW and a per-step cosine learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def standardise(train_f: torch.Tensor, test_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale both with the train mean/std per dimension; constant train dimensions keep std 1."""
    mean = train_f.mean(dim=0, keepdim=True)  # (1, D)
    std = train_f.std(dim=0, keepdim=True)  # (1, D)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return (train_f - mean) / std, (test_f - mean) / std


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` to 0 over ``total`` steps (Loshchilov & Hutter 2016, arXiv:1608.03983)."""
    return base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


@contextmanager
def single_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run tiny per-step ops single-threaded on CPU, restoring the thread count after.

    A probe step (B x D x C matmuls, a 2-tensor AdamW update) is all per-op overhead;
    intra-op threads only add synchronisation, and stall badly when other processes
    share the cores (measured: 4-10x slower with 2 threads on a busy 2-core machine).
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seeded_linear(d_in: int, d_out: int, g: torch.Generator, device: torch.device) -> nn.Linear:
    """nn.Linear with weights ~ N(0, 0.01) drawn from ``g`` and zero bias (MAE's linear head)."""
    head = nn.Linear(d_in, d_out)
    with torch.no_grad():
        head.weight.copy_(torch.randn(d_out, d_in, generator=g) * 0.01)
        head.bias.zero_()
    return head.to(device)


def linear_probe_top1(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 1024,
    seed: int = 0,
) -> float:
    """Train the probe on (N, D) features for ``epochs`` and return top-1 on (M, D) test features.

    Runs on ``train_f``'s device; batch order and initialisation come from a generator
    seeded by ``seed``, so identical inputs give identical output on CPU.
    """
    if epochs < 1 or batch_size < 1 or len(train_f) == 0:
        raise ValueError(f"need epochs, batch_size >= 1 and train rows; got {epochs}, {batch_size}, {len(train_f)}")
    device = train_f.device
    x_tr, x_te = standardise(train_f.float(), test_f.float().to(device))
    y_tr = torch.as_tensor(train_y, device=device).long()
    g = torch.Generator().manual_seed(seed)
    head = seeded_linear(x_tr.shape[1], num_classes, g, device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x_tr)
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    with single_thread_on_cpu(device):
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g).to(device)  # (N,)
            for idx in perm.split(batch_size):
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(lr, step, total)
                loss = F.cross_entropy(head(x_tr[idx]), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    with torch.no_grad():
        pred = head(x_te).argmax(dim=1)  # (M,)
    return (pred == torch.as_tensor(test_y, device=device).long()).float().mean().item()
