"""Tube masking and tubelet (un)patchify for clips (B, T, C, H, W).

VideoMAE's tube masking (Tong et al. 2022, arXiv:2203.12602, Sec. 3.3): one random spatial mask per clip,
repeated at every temporal position, so a masked region cannot be recovered by copying it from a neighbouring
frame. As in the reference's generator, ``int(ratio * S)`` of the ``S = gh * gw`` spatial positions are masked
(at least one stays visible), so every clip hides exactly the same number of tubelets and a batch stacks.

Tubelet indices are t-major, then row-major over the spatial grid: index ``(i_t * gh + i_h) * gw + i_w``, the order
``VideoViT.patch_tokens`` and ``tubelet_patchify`` use. Masks are drawn on ``g.device``; no loop over samples.
"""

from __future__ import annotations

import torch


def tubelet_patchify(x: torch.Tensor, tubelet: int, p: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, N, tubelet*p*p*C), N = (T/tubelet) * (H/p) * (W/p) t-major then row-major; each
    tubelet flattened as (tubelet, p, p, C)."""
    b, t, c, h, w = x.shape
    if t % tubelet or h % p or w % p:
        raise ValueError(f"clip {t}x{h}x{w} is not a multiple of tubelet {tubelet} x patch {p}x{p}")
    gt, gh, gw = t // tubelet, h // p, w // p
    x = x.reshape(b, gt, tubelet, c, gh, p, gw, p)  # (B, gt, tu, C, gh, p, gw, p)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # (B, gt, gh, gw, tu, p, p, C)
    return x.reshape(b, gt * gh * gw, tubelet * p * p * c)  # (B, N, tu*p*p*C)


def tubelet_unpatchify(x: torch.Tensor, tubelet: int, p: int, gt: int, gh: int, gw: int) -> torch.Tensor:
    """(B, N, tubelet*p*p*C) -> (B, gt*tubelet, C, gh*p, gw*p); the inverse of ``tubelet_patchify``."""
    b, n, d = x.shape
    c = d // (tubelet * p * p)
    if n != gt * gh * gw or c * tubelet * p * p != d:
        raise ValueError(f"cannot unpatchify {tuple(x.shape)} into a {gt}x{gh}x{gw} grid of {tubelet}x{p}x{p} "
                         "tubelets")
    x = x.reshape(b, gt, gh, gw, tubelet, p, p, c)  # (B, gt, gh, gw, tu, p, p, C)
    x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # (B, gt, tu, C, gh, p, gw, p)
    return x.reshape(b, gt * tubelet, c, gh * p, gw * p)  # (B, T, C, H, W)


def tube_masking(b: int, gt: int, gh: int, gw: int, ratio: float, g: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``int(ratio * gh * gw)`` spatial positions per clip (at most all but one), the same at every one of the
    ``gt`` temporal positions.

    Returns ``keep`` (B, N_keep) long, the visible tubelet indices in ascending order (N_keep = gt * visible
    positions), and ``mask`` (B, N) bool, True where a tubelet is masked (hidden from the encoder).
    """
    s = gh * gw
    if not 0 <= ratio < 1:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    s_keep = max(s - int(ratio * s + 1e-9), 1)  # the guard: 0.29 * 100 is 28.999... in floating point
    noise = torch.rand(b, s, generator=g, device=g.device)  # (B, S)
    spatial = noise.argsort(dim=1)[:, :s_keep].sort(dim=1).values  # (B, S_keep) visible positions, ascending
    offsets = torch.arange(gt, device=g.device) * s  # (gt,) first index of each temporal position
    keep = (offsets[None, :, None] + spatial[:, None, :]).reshape(b, gt * s_keep)  # (B, N_keep), ascending
    mask = torch.ones(b, gt * s, dtype=torch.bool, device=g.device)
    mask.scatter_(1, keep, False)  # (B, N)
    return keep, mask


__all__ = ["tube_masking", "tubelet_patchify", "tubelet_unpatchify"]
