"""The one EMA helper shared by every (student, teacher) pair (BYOL, MoCo, DINO ...)."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def update_momentum(student: nn.Module, teacher: nn.Module, m: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, parameters and floating buffers alike."""
    for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
        pt.mul_(m).add_(ps.detach(), alpha=1 - m)
    for bs, bt in zip(student.buffers(), teacher.buffers(), strict=True):
        if bt.dtype.is_floating_point:
            bt.mul_(m).add_(bs.detach(), alpha=1 - m)
        else:
            bt.copy_(bs)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule (Grill et al. 2020, arXiv:2006.07733): base at start, 1.0 at the end."""
    progress = min(max(progress, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients switched off: the teacher starts equal to the student."""
    import copy

    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
