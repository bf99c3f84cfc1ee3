"""Batched patch masks drawn from one ``torch.Generator``, and (un)patchify.

- ``random_masking``: MAE's uniform random masking (He et al. 2022, arXiv:2111.06377): per-sample
  noise, argsort, keep the first ``N * (1 - ratio)`` patches.
- ``block_masks``: I-JEPA's multi-block masking (Assran et al. 2023, arXiv:2301.08243): M target
  blocks and one large context block with the targets removed.

Patch indices are row-major over the gh x gw grid, the order ``ViT.patch_tokens`` and ``patchify`` use.
Everything is drawn on ``g.device`` in a few tensor ops; no Python loop over samples.
"""

from __future__ import annotations

import math

import torch


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), N = (H/p) * (W/p) row-major; each patch flattened as (p, p, C)."""
    b, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not a multiple of patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p)  # (B, C, gh, p, gw, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)  # (B, N, p*p*C)


def unpatchify(t: torch.Tensor, p: int, gh: int, gw: int) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, gh*p, gw*p); the inverse of ``patchify``."""
    b, n, d = t.shape
    c = d // (p * p)
    if n != gh * gw or c * p * p != d:
        raise ValueError(f"cannot unpatchify {tuple(t.shape)} into a {gh}x{gw} grid of {p}x{p} patches")
    t = t.reshape(b, gh, gw, p, p, c)  # (B, gh, gw, p, p, C)
    return t.permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)  # (B, C, H, W)


def random_masking(b: int, n: int, ratio: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``n - int(n * (1 - ratio))`` of ``n`` patches per sample, uniformly at random.

    Returns ``keep`` (B, N_keep) long, the visible indices in ascending order, and ``mask`` (B, N) bool,
    True where a patch is masked (hidden from the encoder).
    """
    n_keep = int(n * (1 - ratio))
    if not 0 <= ratio < 1 or n_keep < 1:
        raise ValueError(f"mask ratio {ratio} leaves no visible patch out of {n} (need 0 <= ratio < 1)")
    noise = torch.rand(b, n, generator=g, device=g.device)  # (B, N)
    keep = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values  # (B, N_keep)
    mask = torch.ones(b, n, dtype=torch.bool, device=g.device)
    mask.scatter_(1, keep, False)  # (B, N)
    return keep, mask


def _block_size(n: int, gh: int, gw: int, scale: tuple[float, float], ratio: tuple[float, float],
                g: torch.Generator) -> tuple[int, int]:
    """One (h, w) for the whole batch: area ~ U(scale) * n patches, aspect h/w ~ U(ratio), clipped to the grid."""
    s, r = torch.rand(2, generator=g, device=g.device).tolist()
    area = (scale[0] + s * (scale[1] - scale[0])) * n
    ar = ratio[0] + r * (ratio[1] - ratio[0])
    h = min(max(round(math.sqrt(area * ar)), 1), gh)
    w = min(max(round(math.sqrt(area / ar)), 1), gw)
    return h, w


def _corners(shape: tuple[int, ...], gh: int, gw: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Top-left patch index of h x w blocks placed uniformly inside the grid: long tensor of ``shape``."""
    top = torch.randint(0, gh - h + 1, shape, generator=g, device=g.device)
    left = torch.randint(0, gw - w + 1, shape, generator=g, device=g.device)
    return top * gw + left


def _offsets(h: int, w: int, gw: int, device: torch.device) -> torch.Tensor:
    """(h*w,) patch-index offsets of an h x w block from its top-left corner."""
    return (torch.arange(h, device=device)[:, None] * gw + torch.arange(w, device=device)[None, :]).reshape(-1)


def block_masks(
    b: int,
    gh: int,
    gw: int,
    g: torch.Generator,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_ratio: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_ratio: tuple[float, float] = (1.0, 1.0),
    min_context: int = 4,
    max_tries: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I-JEPA multi-block masks with fixed counts, so a batch stacks.

    As in I-JEPA's collator, one target size and one context size are drawn per batch and each sample
    places its blocks independently. Every target block thus has exactly h*w patches. The context block
    minus the union of the targets varies in size per sample; every sample keeps a random subset of the
    smallest count in the batch. Samples left with fewer than ``min_context`` context patches redraw their
    target positions (up to ``max_tries`` times); any still short keep their whole context block (which
    then overlaps the targets), so no sample is ever empty.

    Returns ``context`` (B, N_ctx) long, ascending, and ``targets`` (B, M, N_tgt) long, each block ascending.
    """
    n, dev = gh * gw, g.device
    if num_targets < 1 or min_context < 1:
        raise ValueError(f"num_targets and min_context must be >= 1, got {num_targets}, {min_context}")
    th, tw = _block_size(n, gh, gw, target_scale, target_ratio, g)
    ch, cw = _block_size(n, gh, gw, context_scale, context_ratio, g)
    t_off, c_off = _offsets(th, tw, gw, dev), _offsets(ch, cw, gw, dev)
    block = torch.zeros(b, n, dtype=torch.bool, device=dev)
    block.scatter_(1, _corners((b, 1), gh, gw, ch, cw, g) + c_off, True)  # (B, N) context block
    corners = _corners((b, num_targets), gh, gw, th, tw, g)  # (B, M)
    for attempt in range(max_tries + 1):
        targets = corners[..., None] + t_off  # (B, M, N_tgt)
        covered = torch.zeros(b, n, dtype=torch.bool, device=dev)
        covered.scatter_(1, targets.reshape(b, -1), True)  # (B, N) union of the targets
        context = block & ~covered  # (B, N)
        short = context.sum(dim=1) < min_context  # (B,)
        if attempt == max_tries or not bool(short.any()):
            break
        corners = torch.where(short[:, None], _corners((b, num_targets), gh, gw, th, tw, g), corners)
    context = torch.where(short[:, None], block, context)  # (B, N) fallback: overlap the targets
    n_ctx = int(context.sum(dim=1).min())
    noise = torch.rand(b, n, generator=g, device=dev) + (~context).float() * 2  # outside the context sorts last
    ctx_idx = noise.argsort(dim=1)[:, :n_ctx].sort(dim=1).values  # (B, N_ctx)
    return ctx_idx, targets
