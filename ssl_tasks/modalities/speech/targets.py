"""HuBERT's frame targets (Hsu et al. 2021, arXiv:2106.07447, Sec. 3.1): k-means on 39-dim MFCC frames (iteration
1) or on a pretrained encoder's frames (iteration 2, ``checkpoint`` and ``layer``).

The ``tokenizer@<dataset>`` stage of a speech dataset: 13 MFCCs (``torchaudio.transforms.MFCC``, log-mel, 40 mel
bands up to the recordings' band limit: 4 kHz for FSDD's 8 kHz files stored at 16 kHz) plus their first and second
differences (``deltas``: ``torchaudio.functional.compute_deltas``'s formula, each clip on its own), on the
encoder's frame grid: a 400-sample window every 320 samples with no padding (``center=False``), so a clip of ``n``
valid samples gives exactly ``frames.conv_frames(n)`` frames, one per encoder frame. Each clip is peak-normalised first, as the feed does. Frames are standardised with the train split's
per-dimension mean and std (the static coefficients would otherwise outweigh the differences in the Euclidean
distance), then MiniBatchKMeans (scikit-learn) with ``num_clusters`` centres is fitted on the TRAIN split's frames
only; every split's frames get the id of their nearest centre. Written atomically to
``artifacts/tokenizers/<dataset>/``::

    tokenizer.json        the configuration, the standardisation, the centres, counts and the dataset's hash
    targets/<split>.npy   int64 (N, conv_frames(T)): cluster ids, ``IGNORE`` (-100) past each clip's frames

Iteration 2 reads the checkpoint folder it is given; the ``lineage`` stage hashes that folder into
``artifacts/lineage/tokenizer-<ds>.json``, on which the dataset's tokenizer stage depends, so a retrained iteration-1
run reruns the targets on the next ``dvc repro`` (no DAG edge from that pretrain stage: run it first, and name the
checkpoint on a second dataset entry).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_tasks.core.io import atomic_dir, write_json_atomic
from ssl_tasks.modalities.speech.feed import IGNORE, ds_hash, peak_normalise
from ssl_tasks.modalities.speech.frames import conv_frames, receptive_field
from ssl_tasks.modalities.speech.shards import SpeechDataset

N_MFCC = 13


@dataclass(frozen=True)
class SpeechTargetConfig:
    """The ``datasets.<name>.tokenizer`` section of a speech dataset: HuBERT's k-means frame targets."""

    num_clusters: int = 100  # HuBERT iteration 1: 100 clusters on MFCC
    n_mels: int = 40
    seed: int = 0
    batch_size: int = 4096  # MiniBatchKMeans' mini-batch
    max_iter: int = 100
    n_init: int = 3
    # HuBERT iteration 2: cluster the frames of a pretrained encoder instead of MFCCs. ``checkpoint``: a pretrain
    # seed folder (``artifacts/pretrain/<run>/seed-<s>``: encoder.pt and meta.json, relative to the project);
    # ``layer``: its transformer layer (1-based; null: the last). Use it on a second dataset entry with the same
    # source, so the iteration-1 runs keep their MFCC targets.
    checkpoint: str = ""
    layer: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.num_clusters <= 10000:
            raise ValueError(f"num_clusters must be in [2, 10000], got {self.num_clusters}")
        if self.n_mels < N_MFCC or self.batch_size < 1 or self.max_iter < 1 or self.n_init < 1 or self.seed < 0:
            raise ValueError(f"n_mels must be >= {N_MFCC}; batch_size, max_iter, n_init >= 1; seed >= 0")
        if self.layer is not None and (not self.checkpoint or self.layer < 1):
            raise ValueError(f"layer ({self.layer}) needs a checkpoint and must be >= 1")


def mfcc_transform(sample_rate: int, n_mels: int = 40, f_max: float | None = None) -> torch.nn.Module:
    """13 MFCCs of log-mel energies on the encoder's frame grid; the mel bands stop at ``f_max`` (default: half
    the sample rate): for clips upsampled from 8 kHz, 4 kHz, above which they hold only noise."""
    window, hop = receptive_field()
    import torchaudio

    return torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=N_MFCC, log_mels=True, melkwargs={
        "n_fft": window, "win_length": window, "hop_length": hop, "center": False, "n_mels": n_mels,
        "f_max": f_max})


def deltas(c: torch.Tensor, n: int = 2) -> torch.Tensor:
    """``torchaudio.functional.compute_deltas`` (win_length 5) of (..., time): sum_k k (c[t+k] - c[t-k]) /
    (2 sum_k k^2) with the edges replicated, as shifted sums (its grouped convolution takes ~15 ms a call on CPU)."""
    padded = torch.nn.functional.pad(c.reshape(-1, 1, c.shape[-1]), (n, n), mode="replicate")[:, 0]  # (R, t + 2n)
    t = c.shape[-1]
    out = sum(k * (padded[:, n + k : n + k + t] - padded[:, n - k : n - k + t]) for k in range(1, n + 1))
    return (out / (2 * sum(k * k for k in range(1, n + 1)))).reshape(c.shape)


@torch.no_grad()
def mfcc_frames(waves: np.ndarray, lengths: np.ndarray, sample_rate: int, n_mels: int = 40,
                batch: int = 256, f_max: float | None = None) -> list[np.ndarray]:
    """Per clip, float32 (conv_frames(length), 39) MFCC + delta + delta-delta of the peak-normalised clip."""
    mfcc = mfcc_transform(sample_rate, n_mels, f_max)
    out: list[np.ndarray] = []
    for s in range(0, len(waves), batch):
        lens = np.asarray(lengths[s : s + batch], dtype=np.int64)
        x = torch.from_numpy(peak_normalise(waves[s : s + batch], lens))  # (B, T)
        c = mfcc(x) if x.shape[1] >= receptive_field()[0] else torch.zeros(len(x), N_MFCC, 0)  # (B, 13, F)
        counts = np.array([conv_frames(int(n)) for n in lens])
        part: list[np.ndarray] = [np.zeros((0, 3 * N_MFCC), dtype=np.float32)] * len(lens)
        for f in np.unique(counts[counts > 0]):  # clips of equal frame count together: the deltas run per clip
            rows = np.flatnonzero(counts == f)
            m = c[torch.from_numpy(rows), :, :f]  # (b, 13, f): frames wholly inside each clip, from its own samples
            d1 = deltas(m)  # (b, 13, f), edges replicated per clip
            d2 = deltas(d1)
            feats = torch.cat([m, d1, d2], dim=1).transpose(1, 2).contiguous().numpy()  # (b, f, 39)
            for r, v in zip(rows, feats):
                part[r] = v
        out.extend(part)
    return out


@torch.no_grad()
def encoder_frames(checkpoint: str | Path, waves: np.ndarray, lengths: np.ndarray, layer: int | None,
                   batch: int = 64) -> list[np.ndarray]:
    """Per clip, float32 (conv_frames(length), D): the frames of layer ``layer`` of a pretrained speech encoder
    (``encoder.frames``, the speech contract), on the peak-normalised clips: HuBERT's iteration-2 features."""
    import json

    from ssl_tasks.core.encoders import ENCODERS
    from ssl_tasks.core.errors import UserError

    folder = Path(checkpoint)
    if not (folder / "encoder.pt").is_file() or not (folder / "meta.json").is_file():
        raise UserError(f"tokenizer.checkpoint: {folder} holds no encoder.pt and meta.json; pretrain that run first "
                        "(dvc repro pretrain@<run>)")
    meta = json.loads((folder / "meta.json").read_text())
    encoder = ENCODERS.get(meta["encoder"])(**meta["encoder_kwargs"])
    encoder.load_state_dict(torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True))
    encoder.eval()
    out: list[np.ndarray] = []
    for s in range(0, len(waves), batch):
        lens = np.asarray(lengths[s : s + batch], dtype=np.int64)
        x = torch.from_numpy(peak_normalise(waves[s : s + batch], lens))  # (B, T)
        h, pad = encoder.frames(x, torch.from_numpy(lens), layer=layer)  # (B, F, D), (B, F)
        for row, n in zip(h.float().numpy(), lens):
            out.append(np.ascontiguousarray(row[: conv_frames(int(n))], dtype=np.float32))
    return out


def assign(frames: list[np.ndarray], width: int, centres: np.ndarray, mean: np.ndarray,
           std: np.ndarray) -> np.ndarray:
    """int64 (N, width) nearest-centre ids of each clip's standardised frames, ``IGNORE`` past its frames."""
    out = np.full((len(frames), width), IGNORE, dtype=np.int64)
    c = torch.from_numpy(centres.astype(np.float32))  # (K, 39)
    for i, f in enumerate(frames):
        if len(f):
            z = torch.from_numpy((f - mean) / std)  # (f, 39)
            out[i, : len(f)] = torch.cdist(z, c).argmin(dim=1).numpy()
    return out


def train_targets(data_dir: Path, out_dir: Path, cfg: SpeechTargetConfig, say: Any) -> dict[str, Any]:
    """Fit the k-means on the train split's MFCC frames and write every split's targets (atomically)."""
    from sklearn.cluster import MiniBatchKMeans

    t0 = time.perf_counter()
    ds = SpeechDataset(Path(data_dir))
    if "train" not in ds.splits():
        from ssl_tasks.core.errors import UserError

        raise UserError(f"{ds.root}: HuBERT targets are fitted on a train split; splits: {', '.join(ds.splits())}")
    if cfg.checkpoint:
        what = f"layer {cfg.layer or 'last'} of {cfg.checkpoint}"
        frames = {s: encoder_frames(cfg.checkpoint, ds.column(s, "waves"), ds.column(s, "lengths"), cfg.layer)
                  for s in ds.splits()}
    else:
        what = f"MFCC {3 * N_MFCC}-dim"
        frames = {s: mfcc_frames(ds.column(s, "waves"), ds.column(s, "lengths"), ds.sample_rate, cfg.n_mels,
                                 f_max=ds.band_limit) for s in ds.splits()}
    dim = next((f.shape[1] for fs in frames.values() for f in fs if len(f)), 3 * N_MFCC)
    train = np.concatenate([f for f in frames["train"] if len(f)] or [np.zeros((0, dim), np.float32)])
    if len(train) < cfg.num_clusters:
        from ssl_tasks.core.errors import UserError

        raise UserError(f"{ds.root}: the train split has {len(train)} MFCC frames, fewer than num_clusters "
                        f"{cfg.num_clusters}; lower datasets.<name>.tokenizer.num_clusters")
    mean, std = train.mean(0), train.std(0)
    std = np.where(std < 1e-6, 1.0, std).astype(np.float32)
    say(f"{what} on {len(train)} train frames ({time.perf_counter() - t0:.1f} s); k-means with "
        f"{cfg.num_clusters} clusters")
    km = MiniBatchKMeans(n_clusters=cfg.num_clusters, random_state=cfg.seed, batch_size=cfg.batch_size,
                         max_iter=cfg.max_iter, n_init=cfg.n_init).fit((train - mean) / std)
    centres = km.cluster_centers_.astype(np.float32)
    width = conv_frames(ds.num_samples)
    targets = {s: assign(f, width, centres, mean, std) for s, f in frames.items()}
    used = np.bincount(targets["train"][targets["train"] >= 0], minlength=cfg.num_clusters)
    p = used / max(used.sum(), 1)
    summary = {"tokenizer": "encoder_kmeans" if cfg.checkpoint else "mfcc_kmeans", "modality": "speech", "num_clusters": cfg.num_clusters,
               "train_frames": int(len(train)), "frames_per_clip": width,
               "clusters_used": int((used > 0).sum()),
               "perplexity": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())),
               "inertia_per_frame": float(km.inertia_ / len(train)),
               "seconds": round(time.perf_counter() - t0, 2)}
    meta = {**{k: v for k, v in summary.items() if k != "seconds"}, "config": asdict(cfg),
            "sample_rate": ds.sample_rate, "f_max": ds.band_limit, "features": what, "dim": int(dim),
            "window": receptive_field()[0], "hop": receptive_field()[1], "data_hash": ds_hash(ds),
            "mean": mean.tolist(), "std": std.tolist(), "centres": centres.tolist()}
    with atomic_dir(out_dir) as tmp:
        (tmp / "targets").mkdir()
        for s, t in targets.items():
            np.save(tmp / "targets" / f"{s}.npy", t)
        write_json_atomic(tmp / "tokenizer.json", meta)
        write_json_atomic(tmp / "summary.json", summary)
    say(f"{summary['clusters_used']} of {cfg.num_clusters} clusters used on train (perplexity "
        f"{summary['perplexity']:.1f}); {summary['seconds']:.1f} s; wrote {out_dir}")
    return summary


__all__ = ["SpeechTargetConfig", "assign", "encoder_frames", "mfcc_frames", "mfcc_transform", "train_targets"]
