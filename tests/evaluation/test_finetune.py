"""Class-balanced subsets and semi-supervised fine-tuning on sklearn digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.evaluation import balanced_subset, finetune_top1, raw_semi_top1
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


def test_recalibrate_batchnorm_matches_a_slow_reference(digits) -> None:  # noqa: ANN001
    """Precise BN: every batch-norm layer ends with the mean (and unbiased variance) of its input over all
    the images, whatever its statistics were, and its momentum is restored."""
    from ssl_tasks.evaluation.features import prepare
    from ssl_tasks.evaluation.finetune import recalibrate_batchnorm

    (x_tr, _), _ = digits
    x = torch.from_numpy(np.ascontiguousarray(x_tr[:96]))
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    enc = _encoder()
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    inputs: dict[torch.nn.Module, list[torch.Tensor]] = {m: [] for m in bns}
    hooks = [m.register_forward_hook(lambda m, a, _o: inputs[m].append(a[0].detach())) for m in bns]
    enc.train()
    with torch.no_grad():  # the reference: the same three batches of 32, one at a time
        for chunk in x.tensor_split(3):
            enc(prepare(chunk, mean, std))
    for h in hooks:
        h.remove()
    for m in bns:
        m.running_mean.fill_(5.0)
        m.running_var.fill_(7.0)
    recalibrate_batchnorm(enc, x, mean, std, batch_size=32)
    assert not enc.training
    for m in bns:
        assert m.momentum == 0.1
        ref_mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in inputs[m]]).mean(0)
        ref_var = torch.stack([a.var(dim=(0, 2, 3)) for a in inputs[m]]).mean(0)  # unbiased, per batch
        torch.testing.assert_close(m.running_mean, ref_mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.running_var, ref_var, atol=1e-5, rtol=1e-4)


def test_few_step_finetune_scores_with_its_own_statistics(digits) -> None:  # noqa: ANN001
    """One step of fine-tuning on 10 labels: without recalibration a random-init CNN would be scored with its
    initial 0/1 statistics (near chance); with it, well above chance."""
    (x_tr, y_tr), (x_te, y_te) = digits
    idx = balanced_subset(y_tr, 0.01, seed=0)  # 10 images, one per class
    acc = finetune_top1(_encoder(), x_tr[idx], y_tr[idx], x_te, y_te, num_classes=10, views=None,
                        mean=MEAN, std=STD, epochs=3, lr=3e-3, batch_size=32, seed=0)
    assert acc > 0.3


def test_finetune_reports_progress_without_changing_the_result(digits) -> None:  # noqa: ANN001
    """A minute of fine-tuning is not silent: ``progress`` hears epoch and loss (here every epoch, every_s=0), and
    listening changes nothing in the result."""
    (x_tr, y_tr), (x_te, y_te) = digits
    idx = balanced_subset(y_tr, 0.1, seed=0)
    lines: list[str] = []
    acc = finetune_top1(_encoder(), x_tr[idx], y_tr[idx], x_te, y_te, num_classes=10, views=None, mean=MEAN,
                        std=STD, epochs=4, lr=3e-3, batch_size=32, seed=0, progress=lines.append, every_s=0.0)
    assert [line.split(",")[0] for line in lines] == [f"epoch {i}/4" for i in range(1, 5)]
    assert all(" loss " in line and line.endswith(" s)") for line in lines)
    quiet = finetune_top1(_encoder(), x_tr[idx], y_tr[idx], x_te, y_te, num_classes=10, views=None, mean=MEAN,
                          std=STD, epochs=4, lr=3e-3, batch_size=32, seed=0)
    assert acc == quiet
