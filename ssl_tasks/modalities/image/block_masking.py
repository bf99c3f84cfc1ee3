"""BEiT's blockwise masking (Bao et al. 2022, arXiv:2106.08254, Sec. 2.5 and Algorithm 1).

Rectangular blocks of patches are masked until a fraction ``ratio`` of the grid is covered: each
block has an area s ~ U(min_block, budget left) and an aspect ratio r with log r ~ U(log 0.3,
log 1/0.3), and is placed uniformly at random; a block is kept only if it masks at least one new
patch and no more than the budget left.

Two simplifications, both for tiny grids and batched drawing:

- the paper draws blocks until the budget is met; here every sample gets ``tries`` block draws,
  batched across samples, and any budget still left is topped up with random single patches,
  so every sample masks exactly ``round(ratio * N)`` patches (at least 1, at most N - 1);
- ``min_block`` (16 in the paper, for a 14 x 14 grid) is capped at the budget left, so grids
  smaller than the paper's still get blocks.

Everything is drawn from one ``torch.Generator`` in tensor ops on its device: no host syncs.
"""

from __future__ import annotations

import math

import torch


def block_mask(batch: int, gh: int, gw: int, ratio: float, g: torch.Generator, min_block: int = 16,
               aspect: tuple[float, float] = (0.3, 1 / 0.3), tries: int = 10) -> torch.Tensor:
    """(B, gh*gw) bool mask, True = masked, row-major like the ViT's patch tokens."""
    if not 0 < ratio < 1:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    n, dev = gh * gw, g.device
    target = min(max(round(ratio * n), 1), n - 1)
    rows, cols = torch.arange(gh, device=dev), torch.arange(gw, device=dev)
    mask = torch.zeros(batch, gh, gw, dtype=torch.bool, device=dev)
    count = torch.zeros(batch, dtype=torch.long, device=dev)
    for _ in range(tries):
        u = torch.rand(batch, 4, generator=g, device=dev)  # (B, 4): area, aspect, top, left
        left = (target - count).float()  # (B,) budget left
        lo = left.clamp(max=min_block)
        area = lo + u[:, 0] * (left - lo)
        log_r = math.log(aspect[0]) + u[:, 1] * (math.log(aspect[1]) - math.log(aspect[0]))
        h = (area * log_r.exp()).sqrt().round().clamp(1, gh).long()  # (B,)
        w = (area / log_r.exp()).sqrt().round().clamp(1, gw).long()  # (B,)
        top = (u[:, 2] * (gh - h + 1)).long()  # (B,) in [0, gh - h]
        lft = (u[:, 3] * (gw - w + 1)).long()
        in_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, gh)
        in_c = (cols >= lft[:, None]) & (cols < (lft + w)[:, None])  # (B, gw)
        block = in_r[:, :, None] & in_c[:, None, :]  # (B, gh, gw)
        new = (block & ~mask).flatten(1).sum(1)  # (B,) patches this block would add
        ok = (new > 0) & (new <= target - count)  # (B,)
        mask |= block & ok[:, None, None]
        count += torch.where(ok, new, 0)
    # Top up to exactly `target`: masked patches rank first, then unmasked ones in random order.
    keys = torch.rand(batch, n, generator=g, device=dev).masked_fill(mask.flatten(1), 2.0)  # (B, N)
    order = keys.argsort(dim=1, descending=True)  # (B, N)
    out = torch.zeros(batch, n, dtype=torch.bool, device=dev)
    return out.scatter_(1, order[:, :target], True)  # (B, N)
