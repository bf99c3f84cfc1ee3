"""Class-balanced subsets and semi-supervised fine-tuning on sklearn digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.evaluation import balanced_subset, finetune_top1, raw_semi_top1
from ssl_tasks.modalities.image.encoders import ENCODERS
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews

MEAN, STD = (0.3,), (0.4,)  # digits pixels in [0, 1], rounded


def test_balanced_subset_counts() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 7, 1])
    idx = balanced_subset(labels, 0.1, seed=0)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted, no duplicates
    counts = np.bincount(labels[idx], minlength=4)
    assert counts.tolist() == [max(1, round(0.1 * n)) for n in (100, 50, 7, 1)] == [10, 5, 1, 1]
    assert np.array_equal(balanced_subset(labels, 1.0, seed=3), np.arange(len(labels)))


def test_balanced_subset_seeded() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    a, b = balanced_subset(labels, 0.1, seed=1), balanced_subset(labels, 0.1, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, balanced_subset(labels, 0.1, seed=2))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_balanced_subset_rejects_fraction(fraction: float) -> None:
    with pytest.raises(UserError, match="fraction"):
        balanced_subset(np.arange(10) % 2, fraction, seed=0)


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.get("small_cnn")(in_channels=1, image_size=8, width=16)


def _run(encoder: torch.nn.Module, digits, views: ImageViews | None, seed: int = 0) -> float:  # noqa: ANN001
    (x_tr, y_tr), (x_te, y_te) = digits
    idx = balanced_subset(y_tr, 0.1, seed=0)  # 121 labelled images, 4 batches of ~30
    return finetune_top1(
        encoder, x_tr[idx], y_tr[idx], x_te, y_te, num_classes=10, views=views,
        mean=MEAN, std=STD, epochs=20, lr=3e-3, batch_size=32, seed=seed,
    )  # fmt: skip


def test_finetune_learns_and_leaves_caller_untouched(digits) -> None:  # noqa: ANN001
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    acc = _run(enc, digits, views=None)
    assert acc > 0.5
    assert enc.training  # mode untouched
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert acc == _run(enc, digits, views=None)  # same seed, same result


def test_finetune_with_views_is_seeded(digits) -> None:  # noqa: ANN001
    cfg = ImageViewConfig(crop_scale=(0.6, 1.0), hflip_p=0.0, jitter_p=0.0)
    views = ImageViews(cfg, torch.tensor(MEAN), torch.tensor(STD), size=8)
    a = _run(_encoder(), digits, views)
    assert a > 0.4
    assert a == _run(_encoder(), digits, views)


def test_raw_semi_baseline(digits) -> None:  # noqa: ANN001
    (x_tr, y_tr), (x_te, y_te) = digits
    idx = balanced_subset(y_tr, 0.1, seed=0)
    acc = raw_semi_top1(x_tr[idx], y_tr[idx], x_te, y_te, num_classes=10, seed=0, epochs=50)
    assert acc > 0.7
