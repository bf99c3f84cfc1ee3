"""The collapse monitors (``ssl_tasks.training.monitors``) read the encoder's representation as well as the
projector's, on the step result's ``embeddings`` and ``projections`` as the training loop does.

The textbook collapsing setup, SimSiam without its stop-gradient (Chen & He 2021, Sec. 4.1), trained briefly on the
stripes task (``learning.common``): its projector collapses (effective rank ~1.07, flagged) while with the
stop-gradient neither level is flagged (projector rank ~2.4, encoder ~3.4). In so short a run the encoder's
features shrink (std ~0.19 against ~0.38 healthy) without crossing the thresholds, so the encoder-level flag is shown
on a deliberately collapsed encoder: its last BatchNorm zeroed, every image maps to the same feature.
"""

from __future__ import annotations

import pytest
import torch
from learning.common import SMALL_HEAD, make, stripes, train
from torch import nn

from ssl_tasks.training.monitors import embedding_metrics, is_collapsed

Monitors = tuple[dict[str, float], dict[str, float]]  # encoder's, projector's


def monitored(obj: nn.Module) -> Monitors:
    held = stripes(256, 1)[0]
    with torch.no_grad():  # train mode, as the loop samples its monitors during the epoch
        res = obj(obj.make_views(held, torch.Generator().manual_seed(1)))
    return embedding_metrics(*res.embeddings), embedding_metrics(*res.projections)


def simsiam(stop_gradient: bool) -> nn.Module:
    obj = make("simsiam", {**SMALL_HEAD, "pred_hidden_dim": 16, "stop_gradient": stop_gradient})
    train(obj, stripes(1024, 0)[0], steps=40, lr=5e-2)
    return obj


@pytest.fixture(scope="module")
def healthy() -> Monitors:
    return monitored(simsiam(stop_gradient=True))


@pytest.fixture(scope="module")
def no_stop_gradient() -> Monitors:
    return monitored(simsiam(stop_gradient=False))


@pytest.mark.parametrize("level", [0, 1], ids=["encoder", "projector"])
def test_a_healthy_run_is_flagged_at_neither_level(healthy: Monitors, level: int) -> None:
    m = healthy[level]
    assert not is_collapsed(m), m
    assert m["effective_rank"] > 2 and m["embedding_std"] > 0.25, m


def test_without_stop_gradient_the_projector_is_flagged_and_the_encoder_shrinks(no_stop_gradient: Monitors,
                                                                                healthy: Monitors) -> None:
    enc, proj = no_stop_gradient
    assert is_collapsed(proj) and proj["effective_rank"] < 1.5, proj
    assert enc["embedding_std"] < 0.7 * healthy[0]["embedding_std"], (enc, healthy[0])


def test_a_collapsed_encoder_is_flagged_at_the_encoder_and_the_projector() -> None:
    obj = make("simsiam", {**SMALL_HEAD, "pred_hidden_dim": 16})
    last_bn = [m for m in obj.encoder.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    with torch.no_grad():  # every feature map ReLU(0) = 0: one point for every image
        last_bn.weight.zero_()
        last_bn.bias.zero_()
    enc, proj = monitored(obj)
    assert is_collapsed(enc) and enc["embedding_std"] < 0.05, enc
    assert is_collapsed(proj), proj
    healthy_init = monitored(make("simsiam", {**SMALL_HEAD, "pred_hidden_dim": 16}))
    assert not is_collapsed(healthy_init[0]) and not is_collapsed(healthy_init[1]), healthy_init
