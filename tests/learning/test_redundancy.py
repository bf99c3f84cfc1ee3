"""Redundancy-reduction objectives (Barlow Twins, VICReg) learn the augmentation-invariant feature of the stripes
task (``learning.common``): a k-NN probe on frozen features, held-out images, must beat the same encoder at random
init (~0.73 and ~0.79 for seeds 0 and 1).
"""

from __future__ import annotations

from learning.common import SMALL_HEAD, assert_learned, learned_and_random


def test_barlow_twins_beats_its_random_init() -> None:
    # lambda scaled to the 32-d projector (the paper's 5e-3 is for 8192-d): ~0.98 (seed 1: 0.97)
    learned, random = learned_and_random("barlow_twins", {**SMALL_HEAD, "lambd": 0.03}, steps=100, lr=5e-3)
    assert_learned("barlow_twins", learned, random)


def test_vicreg_beats_its_random_init() -> None:
    learned, random = learned_and_random("vicreg", SMALL_HEAD, steps=100, lr=5e-3)
    assert_learned("vicreg", learned, random)
