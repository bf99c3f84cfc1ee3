"""Utterance-level protocols on a frozen speech encoder (or MFCC statistics): the main task holds speakers out.

FSDD's upstream split puts every speaker in both splits, where a 39-dim MFCC mean+std with logistic regression
already scores ~0.97: it cannot separate methods. So the main task is leave-one-group-out (leave-one-speaker-out
on FSDD): for each of the G groups, probes fit on every clip of the other groups (all splits) and score the
held-out group's clips; the metric is the mean over groups, with its standard deviation and worst group beside it.

* ``linear``: multinomial logistic regression (scikit-learn, L-BFGS, ``C`` = 1) on features standardised with the
  fitting clips' statistics: the same classifier for SSL embeddings, random init and MFCC statistics;
* ``knn``: the library's weighted k-NN (cosine, ``exp(sim / T)`` votes);
* the upstream split (train -> test) for the record: ``<protocol>/upstream_top1``.

Keys: ``<protocol>/top1`` (the held-out-group mean: what the leaderboard shows), ``<protocol>/loso_std``,
``<protocol>/loso_min``, ``<protocol>/upstream_top1``. Embeddings are the encoder's ``forward(wave, lengths)``
(mean over valid frames) in eval mode, on the feed's peak-normalised clips.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ssl_tasks.modalities.speech.feed import peak_normalise


@torch.no_grad()
def utterance_embeddings(encoder: nn.Module, waves: np.ndarray, lengths: np.ndarray, batch_size: int = 256,
                         device: str | torch.device = "cpu") -> np.ndarray:
    """float32 (N, D): ``encoder(wave, lengths)`` of every stored row, in eval mode (its mode is restored)."""
    was = encoder.training
    encoder.eval().to(device)
    out = []
    try:
        for s in range(0, len(waves), batch_size):
            lens = np.asarray(lengths[s : s + batch_size], dtype=np.int64)
            x = torch.from_numpy(peak_normalise(waves[s : s + batch_size], lens)).to(device)  # (B, T)
            out.append(encoder(x, torch.from_numpy(lens).to(device)).float().cpu().numpy())  # (B, D)
    finally:
        encoder.train(was)
    return np.concatenate(out) if out else np.zeros((0, int(getattr(encoder, "out_dim", 0))), np.float32)


def mfcc_statistics(waves: np.ndarray, lengths: np.ndarray, sample_rate: int,
                    f_max: float | None = None) -> np.ndarray:
    """The raw-input row's features: float32 (N, 78), mean and std over each clip's frames of its 39-dim MFCC +
    delta + delta-delta (the HuBERT-target features; zeros for a clip too short for one frame)."""
    from ssl_tasks.modalities.speech.targets import mfcc_frames

    frames = mfcc_frames(waves, lengths, sample_rate, f_max=f_max)
    return np.stack([np.concatenate([f.mean(0), f.std(0)]) if len(f) else np.zeros(78, np.float32)
                     for f in frames]).astype(np.float32)


def logistic_top1(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                  c: float = 1.0) -> float:
    """Logistic regression on standardised features (fit statistics), top-1 accuracy on the test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(f_train).astype(np.float64), y_train)
    return float((clf.predict(scaler.transform(f_test).astype(np.float64)) == y_test).mean())


def knn_top1(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, num_classes: int,
             k: int, temperature: float) -> float:
    from ssl_tasks.evaluation.knn import knn_top1 as knn

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return float(knn(t(f_train), torch.from_numpy(y_train).long(), t(f_test), torch.from_numpy(y_test).long(),
                     num_classes=num_classes, k=min(k, len(y_train)), temperature=temperature))


def _probe(name: str, f: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, num_classes: int, k: int,
           temperature: float) -> float:
    if name == "linear":
        return logistic_top1(f[train], y[train], f[test], y[test])
    return knn_top1(f[train], y[train], f[test], y[test], num_classes, k, temperature)


def speech_protocols(f: np.ndarray, labels: np.ndarray, groups: np.ndarray, is_test: np.ndarray,
                     protocols: Sequence[str], num_classes: int, k: int = 20,
                     temperature: float = 0.07) -> dict[str, float]:
    """The frozen protocols (``linear``, ``knn`` among ``protocols``) held out by group, and on the upstream split.

    ``f`` (N, D) features of every clip, ``labels`` (N,), ``groups`` (N,) (-1: none; then no held-out metric),
    ``is_test`` (N,) bool: the upstream split.
    """
    out: dict[str, float] = {}
    ids = np.unique(groups[groups >= 0])
    for name in (p for p in ("linear", "knn") if p in protocols):
        if len(ids) >= 2 and (groups >= 0).all():
            accs = [_probe(name, f, labels, np.flatnonzero(groups != g), np.flatnonzero(groups == g), num_classes, k,
                           temperature) for g in ids]
            out[f"{name}/top1"] = float(np.mean(accs))
            out[f"{name}/loso_std"] = float(np.std(accs))
            out[f"{name}/loso_min"] = float(np.min(accs))
        if is_test.any() and (~is_test).any():
            up = _probe(name, f, labels, np.flatnonzero(~is_test), np.flatnonzero(is_test), num_classes, k,
                        temperature)
            out[f"{name}/upstream_top1"] = up
            out.setdefault(f"{name}/top1", up)  # no groups: the upstream split is the task
    return out


def folds(groups: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(group, fitting rows, held-out rows) for each group."""
    return [(int(g), np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups[groups >= 0])]


__all__ = ["folds", "knn_top1", "logistic_top1", "mfcc_statistics", "speech_protocols", "utterance_embeddings"]
