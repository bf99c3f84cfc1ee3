"""Explicit cross-worker gathering for losses that need negatives or batch statistics."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (W*B, ...) concatenated in rank order; gradients flow back to each rank's slice."""
    _, ws = world()
    if ws == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (W*B, ...) without gradient (MoCo keys for the queue)."""
    _, ws = world()
    if ws == 1:
        return x
    out = [torch.empty_like(x) for _ in range(ws)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
