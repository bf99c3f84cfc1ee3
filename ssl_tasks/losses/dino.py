"""DINO's self-distillation loss: a centred, sharpened teacher supervises the student across views.

Caron et al. "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import gather_no_grad, world


def teacher_temperature(progress: float, warmup_temp: float = 0.04, temp: float = 0.07,
                        warmup_fraction: float = 0.3) -> float:
    """Linear warm-up from ``warmup_temp`` to ``temp`` over the first ``warmup_fraction`` of training.

    Paper: 0.04 -> 0.07 over the first 30 of 100 epochs, then constant.
    """
    if warmup_fraction <= 0:
        return temp
    t = min(max(progress, 0.0), warmup_fraction) / warmup_fraction
    return warmup_temp + (temp - warmup_temp) * t


class DINOLoss(nn.Module):
    """Cross entropy from each teacher (global) view to every student view but the same one.

    The teacher's logits are centred by ``center``, an EMA of their batch mean (averaged over
    all workers when ``gather_distributed``), then sharpened by a low temperature; the student's
    are softened by ``student_temp``. Like BatchNorm's running statistics, the centre updates
    (after the loss is computed, so this step uses the old centre) in training mode only.
    """

    center: torch.Tensor

    def __init__(self, num_prototypes: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 gather_distributed: bool = True) -> None:
        super().__init__()
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        if not 0 <= center_momentum <= 1:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.gather_distributed = gather_distributed
        self.register_buffer("center", torch.zeros(1, num_prototypes))  # (1, K)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """student: (Vs, B, K) logits; teacher: (Vt, B, K) logits of the same crops as student[:Vt] -> scalar."""
        vs, vt = student.shape[0], teacher.shape[0]
        if not 1 <= vt <= vs or vs < 2:
            raise ValueError(f"need 1 <= teacher views <= student views and >= 2 student views, got {vt}, {vs}")
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        teacher = teacher.detach()
        q = F.softmax((teacher - self.center) / teacher_temp, dim=-1)  # (Vt, B, K)
        log_p = F.log_softmax(student / self.student_temp, dim=-1)  # (Vs, B, K)
        ce = -torch.einsum("tbk,sbk->tsb", q, log_p).mean(dim=-1)  # (Vt, Vs): batch-mean CE of each pair
        same = torch.eye(vt, vs, dtype=torch.bool, device=ce.device)  # teacher view i is student view i
        loss = ce.masked_fill(same, 0.0).sum() / (vt * vs - vt)
        if self.training:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of teacher logits over views, batch and workers."""
        t = teacher.reshape(-1, teacher.shape[-1]).float()  # (Vt*B, K)
        stats = torch.cat([t.sum(dim=0), t.new_tensor([t.shape[0]])])  # (K + 1,): sum and count
        if self.gather_distributed and world()[1] > 1:
            stats = gather_no_grad(stats[None]).sum(dim=0)  # (W, K + 1) -> (K + 1,)
        batch_center = (stats[:-1] / stats[-1]).view(1, -1)  # (1, K)
        self.center.mul_(self.center_momentum).add_(batch_center.to(self.center.dtype), alpha=1 - self.center_momentum)
