"""Jigsaw puzzles: which of P fixed permutations shuffled the 9 tiles of a 3x3 grid?

Noroozi, Favaro. "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles",
ECCV 2016, arXiv:1603.09246.

Each view is cut into 3x3 tiles (``ssl_tasks.modalities.image.grid``, gap and jitter per tile);
slot s of the puzzle holds tile ``perm[s]`` for a permutation drawn from a fixed set of P. The
shared encoder embeds each tile, and an MLP head on the 9 concatenated features (in slot order)
predicts the permutation's index. The set is chosen greedily for a large minimum Hamming distance,
so no two puzzles are near-duplicates (the paper's Algorithm 1 greedily maximises the summed
distance; here the minimum comes first and the sum breaks ties: P = 64 gives minimum distance 7). The paper uses P = 1000 on ImageNet; tiny data
and a few epochs suit far fewer classes (default 64). Tiles are 2 px on 8x8 images, 7 px on
28x28 and 8 px on 32x32 (gap 1/4 of a cell), resampled to ``tile_size`` (default: the data's
image size, which every registry encoder accepts) before the encoder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.heads.mlp import mlp
from ssl_tasks.modalities.image.grid import cut_tiles
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult

TILES = 9


def all_permutations(n: int) -> np.ndarray:
    """(n!, n) int8, every permutation of 0..n-1 in lexicographic order (as ``itertools.permutations``)."""
    perms = np.zeros((1, 0), dtype=np.int8)
    for m in range(1, n + 1):  # perms of 0..m-1 from those of 0..m-2: pick a first value, shift the rest past it
        first = np.repeat(np.arange(m, dtype=np.int8), perms.shape[0])[:, None]  # (m*(m-1)!, 1)
        rest = np.tile(perms, (m, 1))  # (m*(m-1)!, m-1)
        perms = np.concatenate([first, rest + (rest >= first)], axis=1).astype(np.int8)
    return perms


@functools.lru_cache(maxsize=8)
def permutation_set(count: int, seed: int = 0) -> torch.Tensor:
    """(count, 9) distinct permutations of 0..8, greedily chosen to maximise the minimum Hamming distance.

    Start from a seeded random permutation; then repeatedly add the permutation whose minimum
    distance to those chosen is largest, ties broken by the largest summed distance, then by a
    seeded random key. Deterministic in (count, seed). NumPy: one-off setup, ~100x faster than
    small torch kernels on a busy CPU.
    """
    if not 1 <= count <= 362880:
        raise ValueError(f"permutation count must be in 1..362880 (9!), got {count}")
    every = all_permutations(TILES)  # (9!, 9)
    cols = np.ascontiguousarray(every.T)  # (9, 9!): one contiguous row per slot
    key = np.random.default_rng(seed).random(every.shape[0])  # (9!,) tie-break

    def distance(i: int) -> np.ndarray:  # (9!,) Hamming distance of every permutation to permutation i
        same = np.zeros(every.shape[0], dtype=np.int16)
        for s in range(TILES):
            same += cols[s] == cols[s, i]
        return TILES - same

    chosen = [int(key.argmax())]
    min_d = distance(chosen[0])
    sum_d = min_d.astype(np.int32)
    for _ in range(count - 1):
        best = min_d == min_d.max()
        best &= sum_d == np.where(best, sum_d, -1).max()
        i = int(np.where(best, key, -1.0).argmax())
        chosen.append(i)
        d = distance(i)
        min_d, sum_d = np.minimum(min_d, d), sum_d + d
    return torch.from_numpy(every[chosen].astype(np.int64))


def views_config() -> ImageViewConfig:
    """Light crop and flip; no colour jitter (tile gap and jitter are the augmentation)."""
    return ImageViewConfig(crop_scale=(0.6, 1.0), hflip_p=0.5, jitter_p=0.0, grayscale_p=0.0)


@dataclass(frozen=True)
class JigsawConfig:
    """P = ``permutations`` classes chosen with ``permutation_seed``; tile ``gap`` and ``jitter`` as in the grid."""

    permutations: int = 64
    permutation_seed: int = 0
    gap: float = 0.25
    jitter: bool = True
    tile_size: int | None = None  # encoder input side; None: the data's image size
    head_hidden_dim: int = 512
    views: ImageViewConfig = field(default_factory=views_config)

    def __post_init__(self) -> None:
        if not 2 <= self.permutations <= 1000:
            raise ValueError(f"permutations must be in 2..1000, got {self.permutations}")
        if not 0 <= self.gap < 1:
            raise ValueError(f"gap must be in [0, 1), got {self.gap}")
        if self.tile_size is not None and self.tile_size < 1:
            raise ValueError(f"tile_size must be >= 1 or null, got {self.tile_size}")


@OBJECTIVES.register("jigsaw")
class Jigsaw(Objective):
    Config = JigsawConfig

    def __init__(self, encoder: nn.Module, cfg: JigsawConfig, data: DataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.tile_size = cfg.tile_size or data.image_size
        self.register_buffer("perms", permutation_set(cfg.permutations, cfg.permutation_seed).clone(),
                             persistent=False)
        self.head = mlp(TILES * encoder.out_dim, cfg.head_hidden_dim, cfg.permutations)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) -> [tiles (B, 9, C, T, T) in shuffled slot order, permutation index (B,)]."""
        base = self.view_fn(x, g)  # (B, C, S, S)
        label = torch.randint(0, self.cfg.permutations, (base.shape[0],), generator=g, device=g.device)
        label = label.to(base.device)  # (B,)
        cells = self.perms[label]  # (B, 9): slot s holds the tile of grid cell perms[label, s]
        tiles = cut_tiles(base, cells, self.cfg.gap, self.cfg.jitter, self.tile_size, g)  # (B, 9, C, T, T)
        return [tiles, label]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        """views: shuffled tiles (B, 9, C, T, T) and the permutation index (B,)."""
        tiles, label = views
        b = label.shape[0]
        h = self.encoder(tiles.flatten(0, 1)).view(b, TILES, -1)  # (B, 9, D)
        logits = self.head(h.flatten(1))  # (B, P)
        loss = F.cross_entropy(logits, label)
        acc = (logits.detach().argmax(dim=1) == label).float().mean()
        h = h.detach()
        return StepResult(loss=loss, terms={"jigsaw_loss": loss.detach()}, embeddings=(h[:, 0], h[:, 1]),
                          report={"pretext_acc": float(acc)})
