"""wav2vec 2.0's contrastive task (Baevski et al. 2020, arXiv:2006.11477, Eq. 3): for every masked frame t, pick
its own quantized latent q_t among K distractors, quantized latents of other masked frames of the same utterance,
by cosine similarity with the context output c_t over a temperature (0.1).

``sample_distractors`` draws the K distractors (uniformly, with replacement, never the frame itself);
``MaskedContrastiveLoss`` scores them. A distractor whose latent equals the positive's exactly (the same codes) is
left out of the softmax (logit -inf), as in the reference. A masked frame that is the only masked frame of its
utterance has no distractor and does not count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_distractors(mask: torch.Tensor, num: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F) bool mask -> (N, K) indices, into the N masked frames in row-major order (``x[mask]``), of each masked
    frame's distractors, and (N,) bool: whether the frame has any (its utterance has another masked frame)."""
    if num < 1:
        raise ValueError(f"the number of distractors must be >= 1, got {num}")
    b, f = mask.shape
    pos = torch.nonzero(mask.flatten()).flatten().cpu()  # (N,) flat indices of masked frames, row by row
    rows = pos // f
    counts = mask.sum(1).cpu()  # (B,)
    start = torch.cumsum(counts, 0) - counts  # (B,) first masked frame of each row in ``pos``
    local = torch.arange(pos.numel()) - start[rows]  # (N,) index of the frame among its row's masked frames
    n = counts[rows]  # (N,)
    draw = (torch.rand(pos.numel(), num, generator=g) * (n - 1).clamp_min(0)[:, None]).long()  # (N, K) in [0, n-2]
    draw = draw + (draw >= local[:, None]).long()  # skip the frame itself: [0, n-1] \ {local}
    valid = n >= 2
    draw = torch.where(valid[:, None], draw, local[:, None])
    return (start[rows][:, None] + draw).to(mask.device), valid.to(mask.device)


class MaskedContrastiveLoss(nn.Module):
    """Mean over the masked frames (with distractors) of ``-log softmax(cos(c_t, [q_t, q_d1..q_dK]) / temperature)[0]``.

    ``forward`` also returns the accuracy of the task: the share of those frames whose own latent scores highest.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, c: torch.Tensor, q: torch.Tensor, distractors: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """c: (N, D) context projections and q: (N, D) quantized latents of the N masked frames (``x[mask]``);
        distractors (N, K) and valid (N,) from ``sample_distractors(mask, ...)`` -> (loss, accuracy) scalars."""
        c_t, q_t = c.float(), q.float()  # (N, D)
        q_d = q_t[distractors]  # (N, K, D)
        cands = torch.cat([q_t.unsqueeze(1), q_d], dim=1)  # (N, 1 + K, D)
        logits = F.cosine_similarity(c_t.unsqueeze(1), cands, dim=-1) / self.temperature  # (N, 1 + K)
        same = (q_d == q_t.unsqueeze(1)).all(-1)  # (N, K): a distractor identical to the positive
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
        logits = logits[valid]
        if logits.shape[0] == 0:  # no utterance with two masked frames: nothing to contrast
            zero = c.sum() * 0.0 + q.sum() * 0.0
            return zero, zero.detach()
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(1) == 0).float().mean()
        return loss, acc.detach()
