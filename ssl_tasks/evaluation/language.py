"""Language-model evaluation on held-out text: perplexity, pseudo-perplexity, a unigram baseline, samples.

- perplexity of a causal LM: ``exp`` of the mean next-token negative log-likelihood over the held-out
  packed rows (every position that predicts a non-pad token);
- pseudo-perplexity of a masked LM (Salazar et al. 2020, arXiv:1910.14659): each non-special token masked
  in turn and scored by the MLM head, ``exp`` of the mean negative log-likelihood;
- the unigram baseline: token frequencies of the training rows (add-one smoothed), scored on the same
  held-out targets as the causal LM. A model that learned anything about context sits well below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def causal_perplexity(encoder: nn.Module, rows: np.ndarray, *, pad_id: int, batch_size: int = 128,
                      device: str | torch.device = "cpu") -> float:
    """Held-out perplexity of a causal encoder (its tied LM head) over int64 rows (N, L)."""
    was = encoder.training
    encoder.eval()
    nll, n = 0.0, 0
    try:
        for s in range(0, len(rows), batch_size):
            ids = torch.from_numpy(rows[s : s + batch_size]).to(device)
            logits = encoder.lm_logits(encoder.forward_tokens(ids)[:, :-1])  # (B, L-1, V)
            target = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, -100)
            nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                                         reduction="sum"))
            n += int((target != -100).sum())
    finally:
        encoder.train(was)
    return math.exp(nll / max(n, 1))


@torch.no_grad()
def pseudo_perplexity(mlm: nn.Module, rows: np.ndarray, *, special_ids: Sequence[int], mask_id: int,
                      max_rows: int = 64, device: str | torch.device = "cpu") -> float:
    """Pseudo-perplexity of an MLM objective (encoder + head) over the first ``max_rows`` rows (N, L)."""
    was = mlm.training
    mlm.eval()
    special = torch.as_tensor(sorted(special_ids), device=device)
    nll, n = 0.0, 0
    try:
        for row in rows[:max_rows]:
            ids = torch.from_numpy(row).to(device)
            pos = (~torch.isin(ids, special)).nonzero().squeeze(1)  # (P,) positions to score
            if len(pos) == 0:
                continue
            batch = ids.expand(len(pos), -1).clone()  # (P, L): row p has position pos[p] masked
            batch[torch.arange(len(pos)), pos] = mask_id
            h = mlm.encoder.forward_tokens(batch)[torch.arange(len(pos)), pos]  # (P, D)
            logp = F.log_softmax(mlm.head(h, mlm.encoder), dim=-1)  # (P, V)
            nll -= float(logp[torch.arange(len(pos)), ids[pos]].sum())
            n += len(pos)
    finally:
        mlm.train(was)
    return math.exp(nll / max(n, 1))


def unigram_perplexity(train_rows: np.ndarray, test_rows: np.ndarray, *, vocab_size: int, pad_id: int) -> float:
    """Perplexity of add-one-smoothed training-token frequencies on the held-out next-token targets."""
    tr = train_rows[:, 1:].ravel()
    counts = np.bincount(tr[tr != pad_id], minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    te = test_rows[:, 1:].ravel()
    te = te[te != pad_id]
    return float(math.exp(-logp[te].mean())) if len(te) else float("nan")


@torch.no_grad()
def sample_texts(encoder: nn.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_id: int,
                 temperature: float = 0.8, top_k: int = 40, seed: int = 0,
                 device: str | torch.device = "cpu") -> list[list[int]]:
    """Seeded top-k sampling from a causal encoder: each prompt's ids plus up to ``max_new_tokens`` new ones."""
    was = encoder.training
    encoder.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    try:
        for prompt in prompts:
            ids = torch.tensor([list(prompt)], device=device)
            for _ in range(max_new_tokens):
                ctx = ids[:, -encoder.max_len :]
                logits = encoder.lm_logits(encoder.forward_tokens(ctx)[:, -1]) / temperature  # (1, V)
                top = torch.topk(logits, min(top_k, logits.shape[-1]))
                nxt = top.indices[0, torch.multinomial(F.softmax(top.values[0], -1), 1, generator=g)]
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
                if int(nxt) == stop_id:
                    break
            out.append(ids[0].tolist())
    finally:
        encoder.train(was)
    return out
