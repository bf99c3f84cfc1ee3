"""The named evaluation protocols and the one function that runs a selection of them.

k-NN (Wu et al. 2018, arXiv:1805.01978), linear probe (SimCLR, arXiv:2002.05709),
semi-supervised fine-tuning on class-balanced 1% / 10% label subsets (SimCLR Sec. B.5) and full fine-tuning
(``finetune``: every training label, every encoder parameter; the same views, optimiser, schedule and
precise-BN as the 1% / 10% protocols, so the only difference is the label set).
``encoder=None`` runs the raw-pixel baseline of each. Fine-tuning random init of the same encoder with the
same settings is the equal-budget "trained from scratch" reference: ``pipeline/evaluate.py`` runs every
protocol on it next to each run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.registry import Registry
from ssl_tasks.evaluation.features import extract_features, raw_pair
from ssl_tasks.evaluation.finetune import balanced_subset, finetune_top1, raw_semi_top1
from ssl_tasks.evaluation.knn import knn_top1
from ssl_tasks.evaluation.linear_probe import linear_probe_top1
from ssl_tasks.modalities.image.views import ImageViews


@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol's name, whether it freezes or fine-tunes the encoder, and its label fraction."""

    name: str
    kind: Literal["frozen", "finetune", "language", "image_text"]
    fraction: float | None
    description: str
    metric: str = "top1"  # the result key is "<name>/<metric>"
    higher_is_better: bool = True

    @property
    def key(self) -> str:
        return f"{self.name}/{self.metric}"


PROTOCOLS: Registry[ProtocolSpec] = Registry("protocol")

for _spec in (
    ProtocolSpec("knn", "frozen", None, "weighted k-NN on frozen features (cosine, exp(sim/T) votes)"),
    ProtocolSpec("linear", "frozen", None, "linear probe on frozen, standardised features"),
    ProtocolSpec("semi_1pct", "finetune", 0.01, "fine-tune encoder + linear head on 1% class-balanced labels"),
    ProtocolSpec("semi_10pct", "finetune", 0.10, "fine-tune encoder + linear head on 10% class-balanced labels"),
    ProtocolSpec("finetune", "finetune", 1.0, "fine-tune encoder + linear head on every training label"),
    ProtocolSpec("zero_shot", "image_text", None, "zero-shot classification from class prompts (ensembled)"),
    ProtocolSpec("retrieval", "image_text", None, "image<->text recall@1 on held-out pairs (mean of both ways; "
                 "@5, @10 alongside)", metric="r1"),
    ProtocolSpec("perplexity", "language", None, "held-out next-token perplexity of a causal LM (vs unigram)",
                 metric="ppl", higher_is_better=False),
    ProtocolSpec("pseudo_perplexity", "language", None, "held-out pseudo-perplexity of a masked LM",
                 metric="ppl", higher_is_better=False),
):
    PROTOCOLS.register(_spec.name)(_spec)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings; defaults are the standard ones (k=20, T=0.07 as in DINO)."""

    k: int = 20
    temperature: float = 0.07
    linear_epochs: int = 100
    linear_lr: float = 1e-2
    finetune_epochs: int = 30
    finetune_lr: float = 1e-3
    finetune_batch_size: int = 256
    batch_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "seed" and not value > 0:
                raise UserError(f"evaluation setting {f.name} must be > 0, got {value}")


def _check_labels(name: str, y: np.ndarray, num_classes: int) -> None:
    unlabeled = int((y < 0).sum())
    if unlabeled:
        raise UserError(f"{name} split has {unlabeled} unlabeled samples (label < 0); evaluation needs labels")
    if len(y) and int(y.max()) >= num_classes:
        raise UserError(f"{name} split has label {int(y.max())} but num_classes={num_classes}")


def evaluate_encoder(
    encoder: nn.Module | None,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    protocols: Sequence[str],
    cfg: EvalConfig,
    finetune_views: ImageViews | None,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Run ``protocols`` on uint8 (N, C, H, W) images with int labels.

    Returns metrics keyed ``"<protocol>/top1"`` and the train indices of each semi
    protocol's label subset (``finetune`` uses every training sample and records none).
    Frozen features are extracted once and shared by knn/linear.
    """
    specs = [PROTOCOLS.get(name) for name in dict.fromkeys(protocols)]  # unknown names -> UserError
    # language and image_text protocols need more than an encoder: evaluation/language.py, evaluation/zero_shot.py
    specs = [s for s in specs if s.kind in ("frozen", "finetune")]
    (x_tr, y_tr), (x_te, y_te) = train, test
    y_tr, y_te = np.asarray(y_tr), np.asarray(y_te)
    _check_labels("train", y_tr, num_classes)
    _check_labels("test", y_te, num_classes)
    say = progress or (lambda _line: None)
    device = torch.device(device)
    metrics: dict[str, float] = {}
    subsets: dict[str, np.ndarray] = {}

    t_tr, t_te = torch.from_numpy(y_tr).long().to(device), torch.from_numpy(y_te).long().to(device)
    f_tr = f_te = torch.empty(0)
    if any(s.kind == "frozen" for s in specs):
        say("extracting raw pixels ..." if encoder is None else "extracting features ...")
        if encoder is None:
            f_tr, f_te = raw_pair(x_tr, x_te)  # (N, C*H*W) pixels or (N, V) bag of words
        else:
            f_tr = extract_features(encoder, x_tr, mean, std, batch_size=cfg.batch_size, device=device)  # (N, D)
            f_te = extract_features(encoder, x_te, mean, std, batch_size=cfg.batch_size, device=device)
        f_tr, f_te = f_tr.to(device), f_te.to(device)

    for spec in specs:
        key = f"{spec.name}/top1"
        if spec.name == "knn":
            say(f"knn: k={cfg.k}, T={cfg.temperature} over {len(y_tr)} train samples ...")
            metrics[key] = knn_top1(
                f_tr, t_tr, f_te, t_te, num_classes=num_classes, k=cfg.k, temperature=cfg.temperature
            )
        elif spec.name == "linear":
            say(f"linear: probe for {cfg.linear_epochs} epochs ...")
            metrics[key] = linear_probe_top1(
                f_tr, t_tr, f_te, t_te, num_classes=num_classes,
                epochs=cfg.linear_epochs, lr=cfg.linear_lr, seed=cfg.seed,
            )  # fmt: skip
        else:
            assert spec.fraction is not None  # every finetune protocol names its label fraction
            if spec.fraction == 1.0:  # every label, in the stored order (no draw, nothing to record)
                idx = np.arange(len(y_tr))
            else:
                idx = balanced_subset(y_tr, spec.fraction, cfg.seed)
                subsets[spec.name] = idx
            if encoder is None:
                say(f"{spec.name}: raw-input (pixels or bag of words) linear probe on {len(idx)} labelled examples ...")
                metrics[key] = raw_semi_top1(
                    x_tr[idx], y_tr[idx], x_te, y_te, num_classes=num_classes, seed=cfg.seed, epochs=cfg.linear_epochs,
                    lr=cfg.linear_lr,
                )  # fmt: skip
            else:
                say(f"{spec.name}: fine-tuning {len(idx)} labelled examples for {cfg.finetune_epochs} epochs "
                    f"({finetune_budget(len(idx), cfg, finetune_views)}) ...")
                metrics[key] = finetune_top1(
                    encoder, x_tr[idx], y_tr[idx], x_te, y_te, num_classes=num_classes, views=finetune_views,
                    mean=mean, std=std, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                    batch_size=cfg.finetune_batch_size, seed=cfg.seed, device=device,
                    progress=lambda line, name=spec.name: say(f"{name}: {line}"),
                )  # fmt: skip
    return metrics, subsets


def finetune_budget(n: int, cfg: EvalConfig, views: ImageViews | None) -> str:
    """What one fine-tuning run of ``n`` labelled examples costs and sees, in the words its progress line uses:
    batch size, optimiser steps, learning rate and views (a run and its random-init reference print the same)."""
    steps = cfg.finetune_epochs * max(1, math.ceil(n / cfg.finetune_batch_size))
    seen = "none" if views is None else f"[{views.cfg.short()}]"
    return f"batch {cfg.finetune_batch_size}, {steps} steps, lr {cfg.finetune_lr}, views {seen}"


def run_protocols(ctx: Any, encoder: nn.Module | None, train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], *, num_classes: int, label: str, mean: Sequence[float] = (),
                  std: Sequence[float] = (), views: ImageViews | None = None,
                  protocols: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``evaluate_encoder`` with the pipeline's settings (a ``core.modality.EvalContext``), progress lines and a
    one-line summary."""
    t0 = time.perf_counter()
    metrics, subsets = evaluate_encoder(
        encoder, train, test, num_classes=num_classes, mean=mean, std=std,
        protocols=ctx.protocols if protocols is None else protocols, cfg=ctx.settings, finetune_views=views,
        device="cuda" if torch.cuda.is_available() else "cpu", progress=lambda line: ctx.say(f"{label}: {line}"),
    )  # fmt: skip
    ctx.say(f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + f" ({time.perf_counter() - t0:.0f} s)")
    return metrics, subsets
