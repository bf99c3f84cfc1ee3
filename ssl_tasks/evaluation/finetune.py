"""Semi-supervised evaluation: fine-tune the whole encoder on a class-balanced label subset.

The 1% / 10% protocol of SimCLR (Chen et al. 2020, arXiv:2002.05709, Sec. B.5) and
SimCLRv2 (Chen et al. 2020, arXiv:2006.10029): the pretrained encoder plus a new linear
head are trained end to end with cross entropy on the labelled subset only, then scored
top-1 on the full test set. Here: AdamW (one lr for encoder and head, weight decay
1e-4), per-step cosine schedule, light augmentation supplied by the caller.

Before scoring, batch-norm running statistics are recomputed over the labelled subset with the fine-tuned
weights ("precise BN", Wu & Johnson 2021, arXiv:2105.07576): with a few dozen labels a fine-tuning run
takes a handful of steps, so the momentum-averaged statistics still mostly reflect the starting weights
(for a random-init encoder, the initial 0/1), and eval-mode outputs would be scored with statistics of a
network that no longer exists.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.evaluation.features import extract_features, prepare, raw_pair
from ssl_tasks.evaluation.linear_probe import cosine_lr, linear_probe_top1, seeded_linear
from ssl_tasks.modalities.image.views import ImageViews


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted int64 indices: ``max(1, round(fraction * n_c))`` per class c, drawn without replacement."""
    if not 0 < fraction <= 1:
        raise UserError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    if (labels < 0).any():
        raise UserError(f"balanced_subset needs labels for every sample; {(labels < 0).sum()} are < 0")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):  # sorted, so the draw order is fixed
        members = np.flatnonzero(labels == c)
        m = max(1, round(fraction * len(members)))
        picked.append(rng.choice(members, size=m, replace=False))
    if not picked:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(picked)).astype(np.int64)


def finetune_top1(
    encoder: nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    views: ImageViews | None,
    mean: Sequence[float],
    std: Sequence[float],
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
    every_s: float = 10.0,
) -> float:
    """Fine-tune a deep copy of ``encoder`` + a linear head on the given labelled uint8 images.

    ``progress`` hears ``epoch i/N, loss x`` at most every ``every_s`` seconds (a run of a minute is not silent).

    Each epoch is ``ceil(n / batch_size)`` near-equal batches of a fresh permutation (one
    batch of the whole set when n < batch_size). Batches are ``views(x, g)`` when views is
    given, else only normalised. Returns top-1 on the normalised, unaugmented test images.
    The caller's encoder is never modified.
    """
    if epochs < 1 or batch_size < 1 or len(train_images) == 0:
        raise UserError(
            f"fine-tuning needs epochs, batch_size >= 1 and images; got {epochs}, {batch_size}, {len(train_images)}"
        )
    device = torch.device(device)
    g_cpu = torch.Generator().manual_seed(seed)  # batch order and head init
    g_dev = torch.Generator(device=device).manual_seed(seed)  # augmentation draws
    model = copy.deepcopy(encoder).to(device).train()
    head = seeded_linear(int(model.out_dim), num_classes, g_cpu, device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    x_all = torch.from_numpy(np.ascontiguousarray(train_images)).to(device)  # (n, C, H, W) uint8
    y_all = torch.as_tensor(np.asarray(train_labels), device=device).long()  # (n,)
    n = len(x_all)
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    t0 = last = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g_cpu).to(device)  # (n,)
        for idx in perm.tensor_split(steps_per_epoch):
            x = x_all[idx]
            x = views(x, g_dev) if views is not None else prepare(x, mean_t, std_t)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(lr, step, total)
            loss = F.cross_entropy(head(model(x)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if progress is not None and time.perf_counter() - last >= every_s:
            last = time.perf_counter()
            progress(f"epoch {epoch + 1}/{epochs}, loss {loss.item():.4f} ({last - t0:.0f} s)")
    recalibrate_batchnorm(model, x_all, mean_t, std_t, batch_size=max(batch_size, 256))
    h = extract_features(model, test_images, mean, std, batch_size=max(batch_size, 512), device=device)  # (M, D)
    with torch.no_grad():
        pred = head(h.to(device)).argmax(dim=1).cpu()  # (M,)
    return (pred == torch.as_tensor(np.asarray(test_labels)).long()).float().mean().item()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                          batch_size: int = 256) -> None:
    """Replace every batch-norm layer's running statistics by their average over ``images`` (uint8 (N, C, H, W),
    normalised here, unaugmented) under the current weights; the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if norms and len(images):
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        model.train()
        for chunk in images.tensor_split(math.ceil(len(images) / batch_size)):  # near-equal: no batch of one
            model(prepare(chunk, mean, std))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    model.eval()


def raw_semi_top1(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    epochs: int = 100,
    lr: float = 1e-2,
) -> float:
    """Raw-input baseline of the semi protocols: a linear probe on the subset's raw pixels (bag of words)."""
    f_tr, f_te = raw_pair(train_images, test_images)
    return linear_probe_top1(
        f_tr,
        torch.as_tensor(np.asarray(train_labels)),
        f_te,
        torch.as_tensor(np.asarray(test_labels)),
        num_classes=num_classes,
        epochs=epochs,
        lr=lr,
        seed=seed,
    )
