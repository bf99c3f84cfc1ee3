"""Shared pieces of the learning tests: small seeded tasks whose answer is known, a short training run,
and a probe on frozen features that compares the trained encoder with a random init of the same encoder.

Image task (``stripes``): 16x16 colour images of stripes, class = the stripes' orientation (horizontal,
vertical). What varies at random, and dominates the pixels, is what the image views' augmentations vary: the
stripes' and background's colours, the stripe period and phase, pixel noise. Orientation survives crops, flips
and colour jitter, so an objective that learns invariance to its views must keep it, while a random encoder's
features are dominated by colour. Imported as ``learning.common`` (tests/ is on pytest's pythonpath).
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from ssl_tasks.core.config import build
from ssl_tasks.core.ema import update_momentum
from ssl_tasks.evaluation.knn import knn_top1
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.views import normalize
from ssl_tasks.objectives import OBJECTIVES, DataSpec, Objective

# The control that shows these tests can fail: SSL_TASKS_LEARNING_CONTROL=lr0 trains every learning test with a zero
# learning rate (nothing moves but BatchNorm statistics, which the probe recalibrates), and every one must then fail.
CONTROL = os.environ.get("SSL_TASKS_LEARNING_CONTROL", "")


def control_lr(lr: float) -> float:
    return 0.0 if CONTROL == "lr0" else lr


SIZE = 16
SPEC = DataSpec(channels=3, image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.3, 0.3, 0.3))
CNN = ("small_cnn", {"width": 8})
VIT = ("vit", {"patch_size": 4, "width": 32, "depth": 2, "heads": 2})
# Colour jitter strong enough that two views of an image rarely share its colours (half of them grey): with the
# default jitter, matching views by colour alone is an easy minimum for the non-contrastive objectives.
VIEWS = {"jitter_p": 1.0, "saturation": 1.0, "grayscale_p": 0.5, "brightness": 0.6, "contrast": 0.6}
SMALL_HEAD = {"proj_hidden_dim": 64, "proj_dim": 32, "views": VIEWS}


def assert_learned(name: str, learned: float, random: float, floor: float = 0.9, margin: float = 0.1) -> None:
    """The trained encoder's probe accuracy is high and clearly above the random init's (an encoder that did not
    move scores exactly the random init's: the probe calibrates both the same way)."""
    assert learned > floor and learned > random + margin, (
        f"{name}: k-NN {learned:.3f} after training vs {random:.3f} at random init (need > {floor} and +{margin})")


def stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 16, 16) uint8 images and their int64 labels, 0: horizontal stripes, 1: vertical; classes balanced."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    y = y[torch.randperm(n, generator=g)]
    period = torch.randint(3, 6, (n, 1, 1), generator=g).float()
    phase = torch.rand(n, 1, 1, generator=g) * period
    pos = torch.arange(SIZE).float()
    rows, cols = pos.view(1, SIZE, 1), pos.view(1, 1, SIZE)
    coord = torch.where(y.view(n, 1, 1) == 0, rows, cols)  # (n, S, S): which axis the stripes vary along
    on = (((coord + phase) % period) < period / 2).float().unsqueeze(1)  # (n, 1, S, S)
    fg, bg = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    bg = torch.where((fg - bg).abs().sum(1, keepdim=True) < 0.6, 1 - fg, bg)  # keep the stripes visible
    x = on * fg + (1 - on) * bg + 0.08 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y


def make(name: str, kwargs: dict | None = None, encoder: tuple[str, dict] = CNN, seed: int = 0,
         spec: DataSpec = SPEC) -> Objective:
    """The registered objective ``name`` with its Config built from ``kwargs``, on a fresh seeded encoder."""
    torch.manual_seed(seed)
    cls = OBJECTIVES.get(name)
    enc = build_encoder(encoder[0], spec.channels, spec.image_size, **encoder[1])
    return cls(enc, build(cls.Config, kwargs or {}, name), spec)


def train(obj: Objective, x: torch.Tensor | tuple[torch.Tensor, ...], steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0,
          weight_decay: float = 1e-4) -> list[float]:
    """``steps`` AdamW steps on random batches of ``x`` as the training loop runs them (progress, after_backward,
    EMA of the momentum pairs); returns the losses. ``lr=0`` is the control that must not learn. ``x``: images, or
    a tuple of aligned tensors (images, captions) whose rows are drawn together."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in obj.parameters() if p.requires_grad]
    lr = control_lr(lr)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    obj.train()
    losses = []
    for step in range(steps):
        obj.progress = step / steps
        for group in opt.param_groups:  # short warm-up: the first steps of a fresh projector are the wildest
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        idx = torch.randint(0, len(x[0]) if isinstance(x, tuple) else len(x), (batch,), generator=g)
        xb = tuple(t[idx] for t in x) if isinstance(x, tuple) else x[idx]
        res = obj(obj.make_views(xb, g))
        opt.zero_grad()
        res.loss.backward()
        obj.after_backward()
        opt.step()
        for student, teacher in obj.momentum_pairs():
            update_momentum(student, teacher, obj.momentum(obj.progress))
        losses.append(res.loss.item())
    return losses


def _batches(x: torch.Tensor, spec: DataSpec) -> list[torch.Tensor]:
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    return [normalize(x[i:i + 256], mean, std) for i in range(0, len(x), 256)]


@torch.no_grad()
def calibrated(encoder: nn.Module, x: torch.Tensor, spec: DataSpec = SPEC) -> nn.Module:
    """A frozen eval-mode copy whose BatchNorm statistics are those of ``x`` (exact averages, no momentum).

    Trained and random encoders alike: a random init's BatchNorm holds (0, 1), not its features' statistics,
    and a short run's running averages lag; neither should decide the comparison.
    """
    enc = copy.deepcopy(encoder)
    norms = [m for m in enc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    if norms:
        enc.train()
        for xb in _batches(x, spec):
            enc(xb)
    return enc.eval()


@torch.no_grad()
def features(encoder: nn.Module, x: torch.Tensor, spec: DataSpec = SPEC) -> torch.Tensor:
    """Frozen pooled features (N, D) of uint8 images; ``encoder`` in eval mode (see ``calibrated``)."""
    return torch.cat([encoder(xb) for xb in _batches(x, spec)])


def knn_accuracy(encoder: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], spec: DataSpec = SPEC) -> float:
    """k-NN (k=20, cosine) top-1 on the held-out ``test`` split from frozen features of ``train``."""
    enc = calibrated(encoder, train[0], spec)
    return knn_top1(features(enc, train[0], spec), train[1], features(enc, test[0], spec), test[1],
                    num_classes=int(train[1].max()) + 1)


def learned_and_random(name: str, kwargs: dict | None = None, encoder: tuple[str, dict] = CNN, steps: int = 150,
                       lr: float = 2e-3, batch: int = 64, seed: int = 0) -> tuple[float, float]:
    """k-NN accuracy on held-out stripes of the encoder after ``steps`` of ``name``, and of its random init."""
    pool, probe_train, probe_test = stripes(2048, seed), stripes(512, seed + 100), stripes(512, seed + 200)
    obj = make(name, kwargs, encoder, seed)
    random_acc = knn_accuracy(make(name, kwargs, encoder, seed).eval_encoder, probe_train, probe_test)
    train(obj, pool[0], steps, batch=batch, lr=lr, seed=seed)
    return knn_accuracy(obj.eval_encoder, probe_train, probe_test), random_acc
