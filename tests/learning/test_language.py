"""Language objectives learn what a synthetic corpus makes predictable (MLM's test lives in
tests/objectives/test_text_objectives.py; SimCSE's answer is instance retrieval, below).

Counting rows: ``a, a+1, a+2, ...`` (mod 32) from a random start. Every next token, and every token of a corrupted
span, follows from its context, while the unigram distribution is uniform (entropy ln 32 = 3.47 nats): a model that
learns only token frequencies stays at chance.
"""

from __future__ import annotations

import math

import torch
from learning.common import control_lr

from ssl_tasks.core.config import build
from ssl_tasks.modalities.text.encoders import build_text_encoder
from ssl_tasks.objectives import OBJECTIVES, TextDataSpec

LENGTH, WORDS = 16, 32
SPEC = TextDataSpec(vocab_size=20 + WORDS, pad_id=0, cls_id=1, sep_id=2, mask_id=3, sentinel_ids=tuple(range(4, 20)),
                    special_ids=tuple(range(20)), seq_len=LENGTH)
TINY = {"max_len": LENGTH, "width": 32, "depth": 1, "heads": 2}


def counting_rows(n: int, g: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, WORDS, (n, 1), generator=g)
    return 20 + (start + torch.arange(LENGTH)) % WORDS


def random_rows(n: int, g: torch.Generator) -> torch.Tensor:
    """[CLS], 14 uniformly random words, [SEP]."""
    ids = torch.randint(20, SPEC.vocab_size, (n, LENGTH), generator=g)
    ids[:, 0], ids[:, -1] = SPEC.cls_id, SPEC.sep_id
    return ids


def trained(name: str, encoder: str, steps: int, lr: float = 3e-3, rows=counting_rows,  # noqa: ANN001
            **kwargs: object):  # noqa: ANN201
    torch.manual_seed(0)
    lr = control_lr(lr)
    cls = OBJECTIVES.get(name)
    obj = cls(build_text_encoder(encoder, SPEC.vocab_size, SPEC.pad_id, **TINY), build(cls.Config, kwargs, name),
              SPEC).train()
    opt = torch.optim.AdamW(obj.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 30)
        loss = obj(obj.make_views(rows(64, g), g)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return obj.eval()


def held_out(obj, seed: int = 1):  # noqa: ANN001, ANN201
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return obj(obj.make_views(counting_rows(256, g), g))


def test_causal_lm_next_token_loss_falls_far_below_the_unigram_entropy() -> None:
    res = held_out(trained("causal_lm", "causal_transformer", steps=150))
    # every target follows from the previous token: ~0.05 nats after 150 steps; frequencies alone give ln 32
    assert res.loss.item() < 0.2 * math.log(WORDS), res.loss.item()
    assert res.report["perplexity"] < 2.0


def test_span_corruption_rebuilds_the_spans_from_context() -> None:
    res = held_out(trained("span_corruption", "seq2seq_transformer", steps=150))
    assert res.report["span_acc"] > 0.6, res.report  # chance 1/32; ~0.9 after 150 steps


def test_simcse_tells_held_out_sentences_apart_through_dropout_and_spreads_them() -> None:
    """SimCSE's known answer: a held-out sentence's nearest embedding among the other dropout view of 256 sentences
    is its own, and different sentences stop sharing one direction (Gao et al. 2021, Sec. 5: uniformity).

    Random-token sentences; at random init the top-1 is ~0.37-0.41 and different sentences sit at cosine ~0.55-0.59
    (a transformer's anisotropy); after 100 steps ~0.97 and ~0.03-0.05.
    (Sentence classes marked by one keyword do not work here: unsupervised SimCSE discriminates instances and has
    no reason to weigh the keyword above the other words, and a k-NN probe on it stayed at its random init's ~0.57.)
    """
    obj = trained("simcse", "text_transformer", steps=100, rows=random_rows)
    x = random_rows(256, torch.Generator().manual_seed(1))
    obj.train()  # the two views differ by dropout only
    with torch.no_grad():
        p1, p2 = (torch.nn.functional.normalize(p, dim=1) for p in obj(obj.make_views(x, None)).projections)
    sim = p1 @ p2.T  # (256, 256)
    top1 = float((sim.argmax(1) == torch.arange(len(x))).float().mean())
    others = sim[~torch.eye(len(x), dtype=torch.bool)].mean().item()
    assert top1 > 0.8 and others < 0.25, (top1, others)
