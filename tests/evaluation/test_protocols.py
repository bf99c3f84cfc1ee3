"""The protocol registry and evaluate_encoder on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.evaluation import PROTOCOLS, EvalConfig, evaluate_encoder, extract_features, raw_features

MEAN, STD = (0.3,), (0.4,)  # digits pixels in [0, 1], rounded
ALL = ["knn", "linear", "semi_1pct", "semi_10pct"]
FAST = EvalConfig(linear_epochs=30, finetune_epochs=10, finetune_batch_size=32)


def test_registry() -> None:
    assert PROTOCOLS.names() == sorted([*ALL, "finetune", "perplexity", "pseudo_perplexity", "retrieval",
                                        "zero_shot"])
    assert PROTOCOLS.get("retrieval").key == "retrieval/r1" and PROTOCOLS.get("zero_shot").kind == "image_text"
    assert PROTOCOLS.get("perplexity").key == "perplexity/ppl" and not PROTOCOLS.get("perplexity").higher_is_better
    assert PROTOCOLS.get("semi_1pct").fraction == 0.01 and PROTOCOLS.get("semi_10pct").kind == "finetune"
    assert PROTOCOLS.get("knn").kind == "frozen" and PROTOCOLS.get("knn").fraction is None
    assert PROTOCOLS.get("finetune").kind == "finetune" and PROTOCOLS.get("finetune").fraction == 1.0
    assert PROTOCOLS.get("finetune").key == "finetune/top1"
    with pytest.raises(UserError, match="valid: finetune, knn, linear, perplexity"):
        PROTOCOLS.get("semi_50pct")


def test_raw_baseline_on_digits(digits) -> None:  # noqa: ANN001
    lines: list[str] = []
    metrics, subsets = evaluate_encoder(
        None, *digits, num_classes=10, mean=MEAN, std=STD, protocols=ALL, cfg=FAST,
        finetune_views=None, progress=lines.append,
    )  # fmt: skip
    assert set(metrics) == {f"{p}/top1" for p in ALL}
    assert metrics["knn/top1"] > 0.95
    assert metrics["linear/top1"] > 0.9
    # one label per class is hard; ten percent is most of the way to the full-label k-NN
    assert 0.3 < metrics["semi_1pct/top1"] < metrics["semi_10pct/top1"] < metrics["knn/top1"]
    assert set(subsets) == {"semi_1pct", "semi_10pct"}
    y_tr = digits[0][1]
    assert np.bincount(y_tr[subsets["semi_1pct"]], minlength=10).min() >= 1
    assert len(subsets["semi_10pct"]) == pytest.approx(0.1 * len(y_tr), abs=10)
    assert any(line.startswith("knn") for line in lines) and any(line.startswith("semi_10pct") for line in lines)


def test_encoder_path_on_digits(digits) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    enc = ENCODERS.get("small_cnn")(in_channels=1, image_size=8, width=8).eval()
    metrics, subsets = evaluate_encoder(
        enc, *digits, num_classes=10, mean=MEAN, std=STD, protocols=["knn", "semi_10pct"], cfg=FAST,
        finetune_views=None,
    )  # fmt: skip
    assert set(metrics) == {"knn/top1", "semi_10pct/top1"} and set(subsets) == {"semi_10pct"}
    assert metrics["knn/top1"] > 0.3  # random-init CNN features already beat chance
    assert not enc.training


def test_features_shapes_and_mode(digits) -> None:  # noqa: ANN001
    x = digits[0][0][:50]
    enc = ENCODERS.get("small_cnn")(in_channels=1, image_size=8, width=8).train()
    f = extract_features(enc, x, MEAN, STD, batch_size=16)
    assert f.shape == (50, enc.out_dim) and f.dtype == torch.float32
    assert enc.training
    assert torch.allclose(f[:10], extract_features(enc, x[:10], MEAN, STD))  # eval mode: batch-independent
    r = raw_features(x)
    assert r.shape == (50, 64) and 0 <= r.min() and r.max() <= 1


def test_unlabeled_train_rejected(digits) -> None:  # noqa: ANN001
    (x_tr, y_tr), test = digits
    y_bad = y_tr.copy()
    y_bad[:3] = -1
    with pytest.raises(UserError, match="3 unlabeled"):
        evaluate_encoder(None, (x_tr, y_bad), test, num_classes=10, mean=MEAN, std=STD,
                         protocols=["knn"], cfg=FAST, finetune_views=None)  # fmt: skip


def test_unknown_protocol_rejected(digits) -> None:  # noqa: ANN001
    with pytest.raises(UserError, match="unknown protocol"):
        evaluate_encoder(None, *digits, num_classes=10, mean=MEAN, std=STD,
                         protocols=["knn", "zero_shots"], cfg=FAST, finetune_views=None)  # fmt: skip
