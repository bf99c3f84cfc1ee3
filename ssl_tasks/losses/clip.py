"""CLIP's symmetric image-text InfoNCE (Radford et al. 2021, arXiv:2103.00020, Fig. 3).

For B matching (image, text) pairs with L2-normalised embeddings and a learned logit scale s:
``(CE(s * I @ T.T, arange) + CE(s * T @ I.T, arange)) / 2``. Under a process group every worker
gathers the other workers' embeddings *with* gradient and scores its own B rows against all W*B
columns, so that the mean over workers (what DDP's gradient averaging optimises) is exactly the
single-process loss of the concatenated batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import gather_with_grad, world


def clamp_logit_scale(log_scale: torch.Tensor, max_scale: float = 100.0) -> torch.Tensor:
    """exp(log_scale) clamped to at most ``max_scale`` (the paper clips the logit scale at 100).

    ``log_scale`` is the learnable parameter (the paper initialises it to log(1/0.07)). Where the
    clamp is active the returned scale is constant, so ``log_scale`` gets no gradient and cannot
    keep growing; elsewhere the gradient is that of exp.
    """
    if max_scale <= 0:
        raise ValueError(f"max_scale must be > 0, got {max_scale}")
    return log_scale.exp().clamp(max=max_scale)


#: The paper's initial log-scale: the logit scale starts at 1/0.07.
INIT_LOG_SCALE = math.log(1 / 0.07)


class CLIPLoss(nn.Module):
    """Symmetric cross entropy of image->text and text->image, negatives gathered across workers."""

    def __init__(self, gather_distributed: bool = True) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        """image, text: (B, D) L2-normalised embeddings, row i of one matching row i of the other;
        logit_scale: scalar multiplier (already exp'd and clamped, see :func:`clamp_logit_scale`) -> scalar.

        Every worker must pass the same B.
        """
        if image.shape != text.shape or image.dim() != 2:
            raise ValueError(f"image and text must both be (B, D), got {tuple(image.shape)} and {tuple(text.shape)}")
        b = image.shape[0]
        rank, ws = world() if self.gather_distributed else (0, 1)
        if ws > 1:
            image_all, text_all = gather_with_grad(image), gather_with_grad(text)  # (W*B, D)
        else:
            image_all, text_all = image, text
        logits_image = logit_scale * image @ text_all.T  # (B, W*B)
        logits_text = logit_scale * text @ image_all.T  # (B, W*B)
        targets = torch.arange(b, device=image.device) + rank * b  # global column of each local pair
        return (F.cross_entropy(logits_image, targets) + F.cross_entropy(logits_text, targets)) / 2
