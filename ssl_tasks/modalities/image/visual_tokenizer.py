"""A visual tokenizer for BEiT: k-means over normalised image patches.

BEiT (Bao et al. 2022, arXiv:2106.08254) predicts, at masked positions, the discrete tokens a
frozen image tokenizer gives each patch; the paper uses DALL-E's dVAE (Ramesh et al. 2021,
arXiv:2102.12092), which cannot be downloaded here and would be far too heavy for a CPU. The
tokenizer here is k-means over patches of the ViT's patch size, each standardised by its own
mean and std: a patch's token is its nearest code (squared Euclidean distance).

Why k-means:

- cheap: one pass over at most ``max_patches`` patches, seconds on a CPU;
- deterministic: the same data, patch size, K and seed give the same codebook;
- trainable by the platform on the user's own data, as a pipeline stage, with no download;
- k-means ids of low-level features are a proven masked-prediction target: HuBERT's first
  iteration predicts k-means clusters of MFCC frames at masked positions (Hsu et al. 2021,
  arXiv:2106.07447), and Image GPT's BERT objective predicts k-means colour-cluster tokens of
  masked pixels (Chen et al., ICML 2020).

What it gives up against the dVAE: a token describes one patch's normalised shape only (edges,
strokes, texture), not its brightness or wider context; the per-patch standardisation is what
keeps the codes from being spent on brightness levels.

Fitting uses scikit-learn's ``MiniBatchKMeans`` (k-means++ seeding, ``random_state=seed``) rather
than faiss: at ~1e5 patches it already takes seconds, so faiss's speed on millions of points buys
nothing, while scikit-learn is a dependency anyway and its seeded result needs no extra setup.
It runs on one thread, so the codebook does not depend on the machine's core count (and, on
shared machines, one thread was also faster than OpenMP threads contending for cores).

File format (``torch.save``, read back with ``weights_only=True``)::

    {"codebook": float32 (K, C*p*p), "meta": JSON string}
    meta = {"format", "patch_size", "channels", "num_codes", "eps", "dataset_sha256", "seed", "max_patches"}
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_file, sha256_file
from ssl_tasks.modalities.image.shards import ImageDataset

FORMAT = "ssl_tasks.patch_kmeans_tokenizer/v1"
EPS = 1e-2  # added to each patch's variance ([0, 1] pixel units): near-flat patches stay near the zero vector


def patch_features(x: torch.Tensor, patch_size: int, eps: float = EPS) -> torch.Tensor:
    """Pixel images, uint8 or float in [0, 1], (B, C, H, W) -> (B, N, C*p*p) standardised patches.

    Patches are row-major over the grid, like the ViT's patch embedding; H and W are cropped to
    multiples of ``patch_size``. Each patch has its mean removed and is divided by sqrt(var + eps).
    """
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    gh, gw = x.shape[-2] // patch_size, x.shape[-1] // patch_size
    x = x[..., : gh * patch_size, : gw * patch_size]
    p = F.unfold(x, patch_size, stride=patch_size).transpose(1, 2)  # (B, N, C*p*p)
    mean = p.mean(dim=-1, keepdim=True)  # (B, N, 1)
    var = p.var(dim=-1, unbiased=False, keepdim=True)  # (B, N, 1)
    return (p - mean) / (var + eps).sqrt()


def nearest_code(f: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., F) points, (K, F) codes -> (...) long ids of the nearest code and (...) squared distances to it."""
    c = codebook
    d = (f * f).sum(-1, keepdim=True) - 2 * f @ c.T + (c * c).sum(-1)  # (..., K) squared distances
    dist, ids = d.min(dim=-1)  # (...) each
    return ids, dist.clamp_min(0)


class PatchTokenizer(nn.Module):
    """Frozen nearest-code tokenizer; the codebook is a buffer, so no optimizer ever sees it."""

    def __init__(self, codebook: torch.Tensor, patch_size: int, channels: int, meta: dict[str, Any] | None = None,
                 eps: float = EPS) -> None:
        super().__init__()
        if codebook.ndim != 2 or codebook.shape[1] != channels * patch_size**2:
            raise UserError(f"codebook of shape {tuple(codebook.shape)} does not fit {channels}-channel "
                            f"{patch_size}x{patch_size} patches (expected (K, {channels * patch_size**2}))")
        self.patch_size, self.channels, self.eps = patch_size, channels, eps
        self.num_codes = codebook.shape[0]
        self.meta = dict(meta or {})
        self.register_buffer("codebook", codebook.detach().float().clone())  # (K, C*p*p)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel images, uint8 or float in [0, 1] (not the run's standardisation), (B, C, H, W) -> (B, N) long ids."""
        if x.shape[1] != self.channels:
            raise UserError(f"tokenizer was fitted on {self.channels}-channel images, got {x.shape[1]} channels")
        with torch.autocast(x.device.type, enabled=False):
            return nearest_code(patch_features(x, self.patch_size, self.eps), self.codebook)[0]  # (B, N)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer file atomically, byte-identical for equal content (format: module docstring)."""
        meta = {**self.meta, "format": FORMAT, "patch_size": self.patch_size, "channels": self.channels,
                "num_codes": self.num_codes, "eps": self.eps}
        buf = io.BytesIO()  # in memory, the archive's inner names are fixed: equal tokenizers give equal bytes
        torch.save({"codebook": self.codebook.cpu().contiguous(), "meta": json.dumps(meta, sort_keys=True)}, buf)
        with atomic_file(Path(path)) as tmp:
            tmp.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, patch_size: int | None = None, channels: int | None = None) -> PatchTokenizer:
        """Read a tokenizer file; ``patch_size``/``channels``, when given, must match the file's."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"tokenizer file {path} does not exist; train it first (the tokenizer stage)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(state["meta"])
            codebook = state["codebook"]
            if meta.get("format") != FORMAT or not isinstance(codebook, torch.Tensor):
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            p, c, eps = int(meta["patch_size"]), int(meta["channels"]), float(meta["eps"])
        except Exception as e:  # torch.load raises many types on garbage: all mean the same to a user
            raise UserError(f"{path} is not a valid tokenizer file ({type(e).__name__}: {e})") from None
        if patch_size is not None and patch_size != p:
            raise UserError(f"tokenizer {path} was fitted on {p}x{p} patches "
                            f"but the encoder uses patch_size={patch_size}")
        if channels is not None and channels != c:
            raise UserError(f"tokenizer {path} was fitted on {c}-channel images but the data has {channels} channels")
        return cls(codebook, p, c, meta, eps)


def sample_patches(dataset_dir: str | Path, patch_size: int, max_patches: int, seed: int) -> torch.Tensor:
    """(P, C*p*p) standardised patches, P <= max_patches, from seeded random train images (labels never read)."""
    ds = ImageDataset(Path(dataset_dir))
    _, h, w = ds.image_shape
    if not 1 <= patch_size <= min(h, w):
        raise UserError(f"patch_size must be in [1, {min(h, w)}] for {h}x{w} images, got {patch_size}")
    if max_patches < 1:
        raise UserError(f"max_patches must be >= 1, got {max_patches}")
    shards = ds.shard_images("train")
    sizes = [len(s) for s in shards]
    per_image = (h // patch_size) * (w // patch_size)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(sum(sizes), min(sum(sizes), math.ceil(max_patches / per_image)), replace=False))
    starts = np.cumsum([0, *sizes])
    parts = [np.asarray(s[pick[(pick >= a) & (pick < b)] - a]) for s, a, b in zip(shards, starts, starts[1:])]
    feats = patch_features(torch.from_numpy(np.concatenate(parts)), patch_size).flatten(0, 1)  # (n*N, C*p*p)
    if len(feats) > max_patches:
        feats = feats[torch.from_numpy(np.sort(rng.choice(len(feats), max_patches, replace=False)))]
    return feats


def kmeans_codebook(feats: torch.Tensor, num_codes: int, seed: int) -> torch.Tensor:
    """(P, F) points -> (K, F) float32 k-means centres (MiniBatchKMeans, k-means++ seeding)."""
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if not 2 <= num_codes <= len(feats):
        raise UserError(f"num_codes must be in [2, {len(feats)}] (the number of sampled patches), got {num_codes}")
    km = MiniBatchKMeans(num_codes, init="k-means++", n_init=3, batch_size=4096, max_iter=100, random_state=seed)
    with threadpool_limits(1):  # one thread: the same codebook on any machine, and no spin-waiting on busy cores
        km.fit(feats.numpy())
    return torch.from_numpy(km.cluster_centers_.astype(np.float32))


def fit_patch_kmeans(dataset_dir: str | Path, patch_size: int, num_codes: int, max_patches: int,
                     seed: int) -> torch.Tensor:
    """The (K, C*p*p) codebook of a dataset's train split."""
    return kmeans_codebook(sample_patches(dataset_dir, patch_size, max_patches, seed), num_codes, seed)


def train_tokenizer(data_dir: str | Path, out_path: str | Path, patch_size: int, num_codes: int, seed: int = 0,
                    max_patches: int = 200_000) -> dict[str, Any]:
    """The tokenizer stage: fit, write ``out_path`` atomically, return a JSON-able summary."""
    t0 = time.perf_counter()
    feats = sample_patches(data_dir, patch_size, max_patches, seed)
    codebook = kmeans_codebook(feats, num_codes, seed)
    c = ImageDataset(Path(data_dir)).image_shape[0]
    meta = {"dataset_sha256": sha256_file(Path(data_dir) / "manifest.json"), "seed": seed, "max_patches": max_patches}
    tok = PatchTokenizer(codebook, patch_size, c, meta)
    ids, dist = map(torch.cat, zip(*(nearest_code(f, codebook) for f in feats.split(16384))))  # (P,) each
    tok.save(out_path)
    return {"num_codes": num_codes, "codes_used": int(ids.unique().numel()), "patches": len(feats),
            "inertia": float(dist.mean()), "dataset_sha256": meta["dataset_sha256"],
            "seconds": round(time.perf_counter() - t0, 3)}
