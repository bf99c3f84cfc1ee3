"""Masked language modelling, BERT's objective (Devlin et al. "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding", NAACL 2019, arXiv:1810.04805), with RoBERTa's dynamic masking
(Liu et al. 2019, arXiv:1907.11692): a fresh 15% / 80-10-10 mask every time a row is seen
(``modalities/text/corruption.py``). The prediction head is BERT's (dense, GELU, LayerNorm, then the tied
token embedding plus a bias).

Next-sentence prediction is available (``nsp: true``) and off by default, following RoBERTa's finding that
dropping it does not hurt. Pairs come from consecutive text: a packed row's first half is A and its second
half B (``[CLS] A [SEP] B``); for a random half of the rows B is taken from another row of the batch. The
encoder has no segment embeddings, so the ``[SEP]`` alone marks the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ssl_tasks.modalities.text.corruption import IGNORE, mlm_mask
from ssl_tasks.objectives.base import OBJECTIVES, StepResult, TextDataSpec, TextObjective


@dataclass(frozen=True)
class MLMConfig:
    mask_prob: float = 0.15
    mask_token_frac: float = 0.8
    random_token_frac: float = 0.1
    layout: Literal["pack", "pad"] = "pack"
    nsp: bool = False
    nsp_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.mask_token_frac < 0 or self.random_token_frac < 0 or self.mask_token_frac + self.random_token_frac > 1:
            raise ValueError("mask_token_frac and random_token_frac must be >= 0 and sum to <= 1")
        if self.nsp and self.layout != "pack":
            raise ValueError("nsp builds sentence pairs from consecutive text: it needs layout 'pack'")


class MLMHead(nn.Module):
    """BERT's transform (dense, GELU, LayerNorm) then logits through the tied token embedding, plus a bias."""

    def __init__(self, encoder: nn.Module, vocab_size: int) -> None:
        super().__init__()
        d = encoder.out_dim
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
        return encoder.lm_logits(self.transform(h)) + self.bias


@OBJECTIVES.register("mlm")
class MLM(TextObjective):
    Config = MLMConfig
    requires = frozenset({"pooled", "tokens", "bidirectional"})

    def __init__(self, encoder: nn.Module, cfg: MLMConfig, data: TextDataSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.head = MLMHead(encoder, data.vocab_size)
        self.nsp_head = nn.Sequential(nn.Linear(encoder.out_dim, encoder.out_dim), nn.Tanh(),
                                      nn.Linear(encoder.out_dim, 2)) if cfg.nsp else None

    def _mask(self, ids: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        d, c = self.data, self.cfg
        return mlm_mask(ids, g, special_ids=d.special_ids, vocab_size=d.vocab_size, mask_id=d.mask_id, p=c.mask_prob,
                        p_mask=c.mask_token_frac, p_random=c.random_token_frac)

    def make_pairs(self, ids: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) packed rows -> ``[CLS] A [SEP] B`` rows and is-next labels (B,): 1 = B follows A."""
        b, length = ids.shape
        h = length // 2
        is_next = (torch.rand(b, generator=g, device=ids.device) < 0.5).long()
        shift = torch.randint(1, max(2, b), (1,), generator=g, device=ids.device)
        other = torch.roll(torch.arange(b, device=ids.device), int(shift))  # never the row itself when b > 1
        second = torch.where(is_next.bool()[:, None], ids[:, h + 1 :], ids[other, h + 1 :])
        cls = torch.full((b, 1), self.data.cls_id, dtype=ids.dtype, device=ids.device)
        sep = torch.full((b, 1), self.data.sep_id, dtype=ids.dtype, device=ids.device)
        return torch.cat([cls, ids[:, 1:h], sep, second], dim=1), is_next

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """ids -> [masked inputs, labels (IGNORE where unselected), a second masking (monitors), (is-next labels)]."""
        extra = []
        if self.cfg.nsp:
            x, is_next = self.make_pairs(x, g)
            extra = [is_next]
        inputs, labels = self._mask(x, g)
        second, _ = self._mask(x, g)
        return [inputs, labels, second, *extra]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        inputs, labels, second = views[:3]
        h = self.encoder.forward_tokens(inputs)  # (B, L, D)
        sel = labels != IGNORE
        logits = self.head(h[sel], self.encoder)  # (S, V): only the selected positions
        mlm = F.cross_entropy(logits, labels[sel]) if sel.any() else h.sum() * 0
        terms, report = {"mlm_loss": mlm.detach()}, {}
        if sel.any():
            report["mlm_acc"] = float((logits.detach().argmax(1) == labels[sel]).float().mean())
        loss = mlm
        if self.nsp_head is not None:
            nsp_logits = self.nsp_head(h[:, 0])
            nsp = F.cross_entropy(nsp_logits, views[3])
            loss = loss + self.cfg.nsp_weight * nsp
            terms["nsp_loss"] = nsp.detach()
            report["nsp_acc"] = float((nsp_logits.detach().argmax(1) == views[3]).float().mean())
        emb = None
        if self.monitoring:
            with torch.no_grad():
                emb = (self.encoder.pool(h.detach(), inputs), self.encoder(second))
        return StepResult(loss=loss, terms=terms, report=report, embeddings=emb)
