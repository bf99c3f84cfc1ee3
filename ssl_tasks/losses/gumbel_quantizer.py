"""wav2vec 2.0's product quantizer with Gumbel-softmax (Baevski et al. 2020, arXiv:2006.11477, Sec. 2 and 3.2).

Local features (N, C) -> G groups of V logits; in training each group picks one entry by a straight-through
Gumbel-softmax (the forward pass is the hard one-hot of ``argmax(logits + gumbel noise)``, the gradient that of
``softmax((logits + noise) / tau)``; Jang et al. 2017, arXiv:1611.01144), in evaluation the plain argmax. The G
chosen entries (each of width ``out_dim / G``) are concatenated.

Perplexity of a code distribution: per group ``exp(-sum_v pbar_v log pbar_v)`` of the batch-average ``pbar``,
summed over groups, so it runs from G (every frame picks the same entry in each group: collapse) to G x V
(uniform use). The diversity loss (Eq. 4) uses the soft probabilities' perplexity: ``(GV - ppl) / GV``, in
``[0, 1 - 1/V]``, 0 when the average softmax is uniform in every group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def perplexity(probs: torch.Tensor) -> torch.Tensor:
    """(N, G, V) per-frame distributions (soft or one-hot) -> scalar: the sum over groups of exp(entropy) of their
    average over the N frames."""
    avg = probs.float().mean(0)  # (G, V)
    return torch.exp(-(avg * torch.log(avg.clamp_min(1e-7))).sum(-1)).sum()


def straight_through_gumbel(logits: torch.Tensor, tau: float, gumbels: torch.Tensor) -> torch.Tensor:
    """(..., V) logits and as many Gumbel(0, 1) draws -> hard one-hot in the forward pass, soft gradients."""
    soft = torch.softmax((logits + gumbels) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


@dataclass
class Quantized:
    """The quantizer's output: ``q`` (N, out_dim), ``codes`` (N, G) chosen entries, the soft probabilities'
    perplexity (differentiable; the diversity loss's), the hard codes' perplexity and the diversity loss."""

    q: torch.Tensor
    codes: torch.Tensor
    prob_perplexity: torch.Tensor
    code_perplexity: torch.Tensor
    diversity_loss: torch.Tensor


class GumbelProductQuantizer(nn.Module):
    """G codebooks of V entries each; ``forward(z, tau)`` quantizes (N, in_dim) local features."""

    def __init__(self, in_dim: int, groups: int = 2, entries: int = 64, out_dim: int = 128) -> None:
        super().__init__()
        if groups < 1 or entries < 2:
            raise ValueError(f"the quantizer needs groups >= 1 and entries >= 2, got {groups} x {entries}")
        if out_dim % groups:
            raise ValueError(f"quantizer out_dim {out_dim} is not a multiple of groups {groups}")
        self.groups, self.entries, self.out_dim = groups, entries, out_dim
        self.to_logits = nn.Linear(in_dim, groups * entries)
        self.codebook = nn.Parameter(torch.empty(groups, entries, out_dim // groups))  # (G, V, d)
        nn.init.normal_(self.to_logits.weight, std=1.0)  # as the reference: confident logits from the start
        nn.init.zeros_(self.to_logits.bias)
        nn.init.uniform_(self.codebook)

    def forward(self, z: torch.Tensor, tau: float, gumbels: torch.Tensor | None = None) -> Quantized:
        """z: (N, in_dim) -> ``Quantized``; ``gumbels`` (N, G, V): the noise (drawn from torch's RNG when None)."""
        n = z.shape[0]
        logits = self.to_logits(z).view(n, self.groups, self.entries).float()  # (N, G, V)
        probs = torch.softmax(logits, dim=-1)
        codes = logits.argmax(-1)  # (N, G)
        hard = F.one_hot(codes, self.entries).float()  # (N, G, V)
        if self.training:
            if gumbels is None:
                gumbels = -torch.empty_like(logits).exponential_().log()
            onehot = straight_through_gumbel(logits, tau, gumbels)
            codes = onehot.argmax(-1)
            hard = onehot.detach()
        else:
            onehot = hard
        q = torch.einsum("ngv,gvd->ngd", onehot, self.codebook.float()).reshape(n, -1)  # (N, G * d)
        prob_ppl = perplexity(probs)
        total = self.groups * self.entries
        return Quantized(q=q.to(z.dtype), codes=codes, prob_perplexity=prob_ppl, code_perplexity=perplexity(hard),
                         diversity_loss=(total - prob_ppl) / total)
