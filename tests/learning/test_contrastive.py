"""Contrastive objectives (SimCLR, MoCo v2, MoCo v3) learn the augmentation-invariant feature of a known task.

The stripes task (``learning.common``): class = orientation, colours, period, phase and noise at random. A short
run must lift a k-NN probe on frozen encoder features, held-out images, well above the same encoder at random
init (~0.73 and ~0.79 for seeds 0 and 1). Observed after training: see each case's comment (seeds 0, 1).
"""

from __future__ import annotations

import pytest
from learning.common import SMALL_HEAD, VIT, assert_learned, learned_and_random

HEAD = {k: v for k, v in SMALL_HEAD.items() if k != "views"}


def test_simclr_beats_its_random_init() -> None:
    learned, random = learned_and_random("simclr", SMALL_HEAD, steps=100, lr=5e-3)  # ~0.99 (seed 1: 0.99)
    assert_learned("simclr", learned, random)


def test_moco_v2_beats_its_random_init() -> None:
    learned, random = learned_and_random("moco_v2", {**HEAD, "queue_size": 256}, steps=100, lr=5e-3)  # ~0.86, 0.93
    assert_learned("moco_v2", learned, random, floor=0.8)


@pytest.mark.slow
def test_moco_v3_vit_beats_its_random_init() -> None:
    learned, random = learned_and_random("moco_v3", {**SMALL_HEAD, "pred_hidden_dim": 64}, encoder=VIT, steps=300,
                                         lr=5e-3)
    assert_learned("moco_v3", learned, random, floor=0.8)
