"""Objectives with an EMA teacher or a stop-gradient twin (BYOL, DINO, SimSiam) learn the augmentation-invariant
feature of the stripes task (``learning.common``) instead of collapsing: a k-NN probe on frozen features, held-out
images, must beat the same encoder at random init (~0.73 and ~0.79 for seeds 0 and 1).

Short runs use a fast teacher (momentum 0.9): the paper's 0.996 barely moves the teacher in 150 steps.
"""

from __future__ import annotations

import pytest
from learning.common import SMALL_HEAD, VIEWS, assert_learned, learned_and_random


def test_byol_beats_its_random_init() -> None:
    learned, random = learned_and_random("byol", {**SMALL_HEAD, "pred_hidden_dim": 64, "base_momentum": 0.9},
                                         steps=150, lr=1e-2)  # ~0.97 (seed 1: 0.97; 100 steps: 0.89, 0.87)
    assert_learned("byol", learned, random)


def test_simsiam_beats_its_random_init() -> None:
    learned, random = learned_and_random("simsiam", {**SMALL_HEAD, "pred_hidden_dim": 16}, steps=100,
                                         lr=5e-3)  # ~0.95 (seed 1: 0.94)
    assert_learned("simsiam", learned, random, floor=0.85)


@pytest.mark.slow
@pytest.mark.xfail(reason="open: DINO reaches only ~0.77-0.79 (random init 0.73) on the stripes task in 200-300 "
                          "steps, with the default or the strong views and a sharper teacher", strict=False)
def test_dino_beats_its_random_init() -> None:
    kwargs = {"num_prototypes": 64, "hidden_dim": 64, "bottleneck_dim": 32, "crops": {"local_crops": 2},
              "base_momentum": 0.9, "views": VIEWS}
    learned, random = learned_and_random("dino", kwargs, steps=300, lr=5e-3)
    assert_learned("dino", learned, random, floor=0.8)
