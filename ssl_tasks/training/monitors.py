"""Collapse monitors computed from detached embeddings of two views.

- std: mean per-dimension std of l2-normalised embeddings, times sqrt(D) so ~1 is healthy
  and 0 is total collapse (SimSiam, Chen & He 2021, arXiv:2011.10566, Sec. 4.1).
- effective rank: exp of the entropy of the normalised singular values (Roy & Vetterli 2007;
  RankMe, Garrido et al. 2023, arXiv:2210.02885).
- alignment and uniformity (Wang & Isola 2020, arXiv:2005.10242).

And one divergence monitor over the weights: the encoder's weight norm as a multiple of its norm at initialisation.
A diverging run (``lr: 1000``) keeps a finite loss at chance while its weights explode (x5e4 in one epoch of SimCLR
on digits; a healthy run's stays within a few per cent of 1, ``lr: 1`` reaches x100), and its embeddings need not
look collapsed, so the collapse monitors stay quiet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def embedding_metrics(h1: torch.Tensor, h2: torch.Tensor) -> dict[str, float]:
    """h1, h2: (N, D) features of two views of the same N samples -> scalar monitors."""
    h1, h2 = h1.float(), h2.float()
    d = h1.shape[1]
    z1, z2 = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    std = z1.std(dim=0).mean().item() * math.sqrt(d)
    s = torch.linalg.svdvals(h1 - h1.mean(dim=0))  # (min(N, D),)
    p = s / s.sum().clamp_min(1e-12)
    erank = math.exp(-(p * torch.log(p.clamp_min(1e-12))).sum().item())
    align = (z1 - z2).pow(2).sum(dim=1).mean().item()
    sq = torch.cdist(z1, z1).pow(2)  # (N, N)
    n = z1.shape[0]
    off = sq[~torch.eye(n, dtype=torch.bool, device=sq.device)]
    unif = torch.log(torch.exp(-2 * off).mean()).item() if n > 1 else 0.0
    return {"embedding_std": std, "effective_rank": erank, "alignment": align, "uniformity": unif}


#: a run whose encoder weight norm grows past this multiple of its initial norm (or to inf/nan) is flagged diverged
DIVERGED_WEIGHT_RATIO = 100.0


@torch.no_grad()
def weight_norm(module: torch.nn.Module) -> float:
    """The l2 norm of all of ``module``'s parameters together."""
    return math.sqrt(sum(p.detach().float().pow(2).sum().item() for p in module.parameters()))


def is_diverged(weight_norm_ratio: float) -> bool:
    return not math.isfinite(weight_norm_ratio) or weight_norm_ratio > DIVERGED_WEIGHT_RATIO


def is_collapsed(metrics: dict[str, float], std_threshold: float = 0.05, rank_threshold: float = 1.5) -> bool:
    """True when the normalised std or the effective rank has fallen to near nothing."""
    return metrics["embedding_std"] < std_threshold or metrics["effective_rank"] < rank_threshold
