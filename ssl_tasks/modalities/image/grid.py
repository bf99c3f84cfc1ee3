"""Tiles of a 3x3 grid, cut and resized in one ``grid_sample`` (context-prediction pretext tasks).

Doersch et al. 2015 (arXiv:1505.05192) and Noroozi & Favaro 2016 (arXiv:1603.09246) cut a 3x3
grid of patches with a gap between them and a random jitter of each patch inside its cell, so the
network cannot solve the task from edge continuity. Here the grid spans the whole (already
augmented) view; cells are numbered in reading order 0..8 (4 is the centre). Geometry is
fractional, so the same code serves 8x8, 28x28 and 32x32 images: with ``gap`` g each tile covers
(1 - g) of its cell's side, and with ``jitter`` it moves uniformly by up to g/2 of the cell side
along each axis, staying inside its cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRID = 3


def cut_tiles(x: torch.Tensor, cells: torch.Tensor, gap: float, jitter: bool, size: int,
              g: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) images, (B, T) cell indices in 0..8 -> (B, T, C, size, size) tiles.

    Tile t of sample b is cut from cell ``cells[b, t]`` and resampled (bilinear) to ``size``.
    """
    if not 0 <= gap < 1:
        raise ValueError(f"gap must be in [0, 1), got {gap}")
    b, t = cells.shape
    c = x.shape[1]
    row, col = (cells // GRID).to(x.dtype), (cells % GRID).to(x.dtype)  # (B, T)
    half = (1 - gap) / GRID  # tile half-side in [-1, 1] image coordinates (a cell's half-side is 1/3)
    cx = -1 + (2 * col + 1) / GRID  # (B, T) cell centres
    cy = -1 + (2 * row + 1) / GRID
    if jitter and gap > 0:
        shift = gap / GRID  # cell half-side minus tile half-side
        cx = cx + (torch.rand(b, t, generator=g, device=g.device).to(x) * 2 - 1) * shift
        cy = cy + (torch.rand(b, t, generator=g, device=g.device).to(x) * 2 - 1) * shift
    theta = torch.zeros(b * t, 2, 3, device=x.device, dtype=x.dtype)  # (B*T, 2, 3)
    theta[:, 0, 0] = half
    theta[:, 1, 1] = half
    theta[:, 0, 2] = cx.reshape(-1)
    theta[:, 1, 2] = cy.reshape(-1)
    grid = F.affine_grid(theta, [b * t, c, size, size], align_corners=False)  # (B*T, size, size, 2)
    src = x.repeat_interleave(t, dim=0)  # (B*T, C, S, S)
    tiles = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return tiles.view(b, t, c, size, size)
