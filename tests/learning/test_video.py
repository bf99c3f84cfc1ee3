"""VideoMAE learns to fill in what it cannot see, on real moving sprites.

The known answer: a masked tubelet's target is its pixels normalised by their own mean and std, so a model that has
learnt nothing about the clips does no better than predicting 0, whose loss is the mean square of the normalised
target (just under 1; computed exactly below on the same tubelets). Predicting a masked tubelet that holds part of
the sprite needs the sprite's appearance from the visible tubelets and its position in that frame pair from its
motion (tube masking hides that spatial position in every frame). A short run must bring the loss on those tubelets
(``foreground_loss``) clearly below the zero predictor's; ``SSL_TASKS_LEARNING_CONTROL=lr0`` (``learning.common``)
trains with lr 0, and then it must fail.

The background tubelets (black: their normalised target is 0) are left out: every model reproduces them early.
Whether VideoMAE's features then separate directions of motion is bench/RESULTS.md section 11's question.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from helpers import needs_shared
from learning.common import control_lr

from ssl_tasks.core.config import build
from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.video.masking import tubelet_patchify
from ssl_tasks.modalities.video.sources import moving_sprites
from ssl_tasks.modalities.video.spec import VideoDataSpec
from ssl_tasks.objectives import OBJECTIVES

FMNIST = SHARED_DATA / "fashion_mnist"
STEPS = 400


def zero_prediction_loss(clips: torch.Tensor, mask: torch.Tensor, tubelet: int, patch: int) -> float:
    """The loss of predicting 0 for every masked foreground tubelet: the mean square of its normalised target."""
    t = tubelet_patchify(clips.float() / 255, tubelet, patch)  # (B, N, P)
    norm = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    fg = mask & (t.amax(-1) > 0.5 / 255)  # masked tubelets holding a sprite pixel
    return float(norm.pow(2).mean(-1)[fg].mean())


@pytest.mark.slow  # ~15 s on 2 cores
@needs_shared(FMNIST / "train-images-idx3-ubyte.gz", "Fashion-MNIST")
def test_videomae_reconstructs_the_sprite_better_than_knowing_nothing() -> None:
    res = moving_sprites(Path(FMNIST), test_fraction=0.0, split_seed=0, frames=8, size=16, sprite_size=7,
                         train_clips=256, test_clips=8)
    x = torch.from_numpy(np.ascontiguousarray(res.splits["train"].clips))  # (256, 8, 1, 16, 16) uint8
    mean, std = float(x.float().div(255).mean()), float(x.float().div(255).std())
    spec = VideoDataSpec(frames=8, channels=1, height=16, width=16, mean=(mean,), std=(std,))
    torch.manual_seed(0)
    enc = ENCODERS.get("video_vit")(in_channels=1, frames=8, image_size=16, tubelet=2, patch_size=4, width=32, depth=2,
                                    heads=2)
    cfg = build(OBJECTIVES.get("videomae").Config, {"mask_ratio": 0.75, "decoder_width": 32, "decoder_depth": 1,
                                                     "decoder_heads": 2}, "videomae")
    obj = OBJECTIVES.get("videomae")(enc, cfg, spec)
    opt = torch.optim.AdamW(obj.parameters(), lr=control_lr(3e-3))
    g = torch.Generator().manual_seed(0)
    obj.monitoring = False
    for _ in range(STEPS):
        views = obj.make_views(x[torch.randint(0, len(x), (32,), generator=g)], g)
        loss = obj(views).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    # held-out clips of the test split's sprites, four fresh masks each
    test = torch.from_numpy(np.ascontiguousarray(moving_sprites(
        Path(FMNIST), test_fraction=0.0, split_seed=0, frames=8, size=16, sprite_size=7, train_clips=8,
        test_clips=128).splits["test"].clips))
    obj.eval()
    learned, zero = [], []
    with torch.no_grad():
        for _ in range(4):
            views = obj.make_views(test, g)
            learned.append(float(obj(views).terms["foreground_loss"]))
            zero.append(zero_prediction_loss(test, views[2], 2, 4))
    learned_m, zero_m = float(np.mean(learned)), float(np.mean(zero))
    assert learned_m < 0.9 * zero_m, (
        f"foreground loss {learned_m:.3f} after {STEPS} steps vs {zero_m:.3f} for predicting nothing (need < 0.9x)")
