"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023, arXiv:2303.15343, Eq. 1 and Sec. 3.3).

For B (image, text) pairs with L2-normalised embeddings x_i, y_j, a learned temperature t = exp(t')
and bias b: ``L = -(1/B) sum_i sum_j log sigmoid(z_ij * (t * x_i . y_j + b))`` with z_ij = +1 on the
diagonal (matching pairs) and -1 elsewhere. Every pair is an independent binary problem, so there is
no softmax normaliser over the batch.

Distributed ("chunked", Sec. 3.3): nothing is gathered and no (W*B) x (W*B) matrix is formed. Each
worker scores its local B x B block (positives on the diagonal), then passes its text chunk around
a ring W-1 times, scoring its images against every chunk it receives (all negatives). The exchange
is differentiable, so each text row's gradient travels back around the ring to the worker that owns
it. Each worker's loss is its partial sum over its B rows against all W*B columns, divided by B;
the mean over workers (what DDP's gradient averaging optimises) equals the single-process loss of
the concatenated batch with N = W*B in the normaliser.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssl_tasks.core.distributed import world

#: The paper's initialisation: t' = log 10 (so t = exp(t') = 10) and b = -10, which keeps the
#: initial loss from being dominated by the B^2 - B negatives.
INIT_LOG_TEMPERATURE = math.log(10.0)
INIT_BIAS = -10.0


def _exchange(tensor: torch.Tensor, to_rank: int, from_rank: int, group=None) -> torch.Tensor:
    """Send ``tensor`` to ``to_rank`` and return the same-shaped tensor received from ``from_rank``."""
    tensor = tensor.contiguous()
    received = torch.empty_like(tensor)
    ops = [
        dist.P2POp(dist.isend, tensor, to_rank, group),
        dist.P2POp(dist.irecv, received, from_rank, group),
    ]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return received


class _NeighbourExchange(torch.autograd.Function):
    """Forward: send to ``to_rank``, receive from ``from_rank``. Backward: the incoming gradient
    (which belongs to the tensor that came from ``from_rank``) goes back to ``from_rank``, and the
    gradient of the tensor this rank sent arrives from ``to_rank``."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, to_rank: int, from_rank: int, group=None) -> torch.Tensor:
        ctx.to_rank, ctx.from_rank, ctx.group = to_rank, from_rank, group
        return _exchange(tensor, to_rank, from_rank, group)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # Differentiable itself (the same exchange reversed), so double backward also works.
        grad = _NeighbourExchange.apply(grad_output, ctx.from_rank, ctx.to_rank, ctx.group)
        return grad, None, None, None


def neighbour_exchange(tensor: torch.Tensor, to_rank: int, from_rank: int, group=None) -> torch.Tensor:
    """Differentiable ring step: send ``tensor`` to ``to_rank``, return what ``from_rank`` sent."""
    return _NeighbourExchange.apply(tensor, to_rank, from_rank, group)


def _pair_loss_sum(image: torch.Tensor, text: torch.Tensor, temperature, bias, positives_on_diagonal: bool):
    """-sum log sigmoid(z * (t * image @ text.T + b)) over one B x B' block."""
    logits = temperature * image @ text.T + bias
    if positives_on_diagonal:
        z = 2 * torch.eye(*logits.shape, dtype=logits.dtype, device=logits.device) - 1  # +1 diag, -1 off
        logits = z * logits
    else:
        logits = -logits
    return -F.logsigmoid(logits).sum()


class SigLIPLoss(nn.Module):
    """Pairwise sigmoid image-text loss; chunked ring exchange of text embeddings across workers."""

    def __init__(self, distributed: bool = True) -> None:
        super().__init__()
        self.distributed = distributed

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """image, text: (B, D) L2-normalised embeddings, row i of one matching row i of the other;
        temperature: scalar t (already exp'd); bias: scalar b -> scalar.

        Under a process group every worker must pass the same B (the ring exchanges equal shapes).
        """
        if image.shape != text.shape or image.dim() != 2:
            raise ValueError(f"image and text must both be (B, D), got {tuple(image.shape)} and {tuple(text.shape)}")
        b = image.shape[0]
        rank, ws = world() if self.distributed else (0, 1)
        total = _pair_loss_sum(image, text, temperature, bias, positives_on_diagonal=True)
        if ws > 1:
            to_rank, from_rank = (rank + 1) % ws, (rank - 1) % ws
            chunk = text
            for _ in range(ws - 1):
                # After k steps ``chunk`` is the text of rank - k: never one of this rank's pairs.
                chunk = neighbour_exchange(chunk, to_rank, from_rank)
                total = total + _pair_loss_sum(image, chunk, temperature, bias, positives_on_diagonal=False)
        return total / b
