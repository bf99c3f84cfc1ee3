"""The ``finetune`` protocol: every encoder parameter trained, every training label used, the 1% / 10% settings,
and its random-init reference fine-tuned with the identical budget (same examples, epochs, steps, views)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.modality import EvalContext, get_modality
from ssl_tasks.data.ingest import ingest
from ssl_tasks.evaluation import EvalConfig, balanced_subset, evaluate_encoder
from ssl_tasks.evaluation.features import prepare
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews

MEAN, STD = (0.3,), (0.4,)  # digits pixels in [0, 1], rounded
CFG = EvalConfig(finetune_epochs=2, finetune_batch_size=128, finetune_lr=1e-3)


def _capture(encoder: nn.Module) -> tuple[list[nn.Module], list[torch.Tensor]]:
    """A forward hook that records the module it runs on (the protocol's fine-tuned copy: a deep copy keeps the
    hook) and every input it sees while gradients flow (training steps, not the precise-BN pass or scoring)."""
    modules: list[nn.Module] = []
    inputs: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if not modules or modules[-1] is not module:
            modules.append(module)
        if torch.is_grad_enabled() and module.training:
            inputs.append(args[0].detach().clone())

    encoder.register_forward_hook(hook)
    return modules, inputs


def _digits_encoders() -> dict[str, Callable[[], nn.Module]]:
    return {
        "small_cnn": lambda: ENCODERS.get("small_cnn")(in_channels=1, image_size=8, width=8),
        "resnet18": lambda: ENCODERS.get("resnet18")(in_channels=1, image_size=8),
        "vit": lambda: ENCODERS.get("vit")(in_channels=1, image_size=8, patch_size=4, width=32, depth=2, heads=2),
    }


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, bool]:
    return {k: not torch.equal(before[k], p.detach().cpu()) for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["small_cnn", pytest.param("resnet18", marks=pytest.mark.slow), "vit"])
def test_finetune_updates_every_image_encoder_parameter(name: str, digits) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    enc = _digits_encoders()[name]()
    before = {k: v.detach().clone() for k, v in enc.named_parameters()}
    buffers = {k: v.clone() for k, v in enc.named_buffers()}
    modules, _ = _capture(enc)
    (x_tr, y_tr), test = digits
    views = ImageViews(ImageViewConfig(crop_scale=(0.6, 1.0), hflip_p=0.0, jitter_p=0.0), torch.tensor(MEAN),
                       torch.tensor(STD), size=8)
    x_te, y_te = test
    metrics, subsets = evaluate_encoder(enc, (x_tr[:200], y_tr[:200]), (x_te[:100], y_te[:100]), num_classes=10,
                                        mean=MEAN, std=STD, protocols=["finetune"], cfg=CFG, finetune_views=views)
    assert set(metrics) == {"finetune/top1"} and subsets == {}  # all labels: no subset drawn or recorded
    tuned = modules[0]
    assert tuned is not enc  # the protocol trains a copy
    changed = _changed(before, tuned)
    assert changed and all(changed.values()), [k for k, c in changed.items() if not c]
    assert all(torch.equal(before[k], p) for k, p in enc.named_parameters())  # the caller's encoder is untouched
    norms = [k for k, m in tuned.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bool(norms) == (name != "vit")
    for k in norms:  # precise BN: statistics recomputed under the fine-tuned weights
        assert not torch.equal(buffers[f"{k}.running_mean"], dict(tuned.named_buffers())[f"{k}.running_mean"])


@pytest.mark.parametrize("name", ["text_transformer", "causal_transformer", "seq2seq_transformer"])
def test_finetune_updates_every_text_encoder_parameter_on_the_pooled_path(name: str) -> None:
    """Every parameter a text encoder's pooled features depend on is trained; a seq2seq model's decoder (not on
    that path: the protocol classifies the encoder's features) is the only part left as it was."""
    rng = np.random.default_rng(0)
    vocab, n = 64, 96
    ids = rng.integers(1, vocab, size=(n + 40, 12)).astype(np.int64)
    ids[:, 9:] = np.where(rng.random((n + 40, 3)) < 0.5, 0, ids[:, 9:])  # some padding (pad id 0)
    labels = (ids[:, 0] % 3).astype(np.int64)
    torch.manual_seed(0)
    enc = ENCODERS.get(name)(vocab, 0, max_len=12, width=32, depth=1, heads=2)
    before = {k: v.detach().clone() for k, v in enc.named_parameters()}
    modules, _ = _capture(enc)
    metrics, _ = evaluate_encoder(enc, (ids[:n], labels[:n]), (ids[n:], labels[n:]), num_classes=3, mean=(),
                                  std=(), protocols=["finetune"], cfg=CFG, finetune_views=None)
    assert 0 <= metrics["finetune/top1"] <= 1
    unchanged = sorted(k for k, c in _changed(before, modules[0]).items() if not c)
    decoder = sorted(k for k in before if k.startswith(("dec_", "dec_blocks")))
    assert unchanged == decoder and (bool(decoder) == (name == "seq2seq_transformer"))


def test_finetune_trains_on_every_training_example_every_epoch(digits) -> None:  # noqa: ANN001
    """Instrumented: the inputs of the gradient steps are exactly the training set, each example once per epoch,
    including the only example of a class (one 9 among the training images)."""
    (x_tr, y_tr), test = digits
    keep = np.concatenate([np.flatnonzero(y_tr != 9)[:250], np.flatnonzero(y_tr == 9)[:1]])
    x, y = x_tr[keep], y_tr[keep]
    assert (y == 9).sum() == 1
    torch.manual_seed(0)
    enc = ENCODERS.get("small_cnn")(in_channels=1, image_size=8, width=8)
    _, seen = _capture(enc)
    evaluate_encoder(enc, (x, y), test, num_classes=10, mean=MEAN, std=STD, protocols=["finetune"], cfg=CFG,
                     finetune_views=None)  # no views: each input is exactly its normalised image
    steps = list(seen)
    assert len(steps) == CFG.finetune_epochs * int(np.ceil(len(y) / CFG.finetune_batch_size))
    rows = Counter(r.numpy().tobytes() for b in steps for r in b)
    want = prepare(torch.from_numpy(x), torch.tensor(MEAN), torch.tensor(STD))
    expected = Counter(r.numpy().tobytes() for r in want)
    assert rows == Counter({k: v * CFG.finetune_epochs for k, v in expected.items()})
    assert rows[want[int(np.flatnonzero(y == 9)[0])].numpy().tobytes()] == CFG.finetune_epochs
    # the 10% protocol, for contrast, sees a class-balanced tenth
    other = ENCODERS.get("small_cnn")(in_channels=1, image_size=8, width=8)
    _, seen10 = _capture(other)
    evaluate_encoder(other, (x, y), test, num_classes=10, mean=MEAN, std=STD, protocols=["semi_10pct"], cfg=CFG,
                     finetune_views=None)
    tenth = balanced_subset(y, 0.1, CFG.seed)
    assert sum(len(b) for b in seen10) == CFG.finetune_epochs * len(tenth) and len(tenth) < len(y) / 5


class _Lines(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_random_init_reference_is_fine_tuned_with_the_identical_budget(tmp_path: Path) -> None:
    """What ``evaluate@<run>`` (``pipeline/evaluate.py``) does for a run and its reference: the modality's
    ``evaluate`` on the trained encoder, then on a fresh one of the same configuration and seed with
    ``trained=False``, both under the stage's one context. The progress lines state each fine-tuning run's
    examples, epochs, batch, steps, lr and views: they must agree."""
    ingest("sklearn_digits", None, tmp_path / "digits")
    modality = get_modality("image")
    ds = modality.open(tmp_path / "digits")
    n_train = ds.count("train")
    views = ImageViewConfig(crop_scale=(0.6, 1.0), hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
    lines = _Lines()
    ctx = EvalContext(protocols=("finetune", "semi_10pct"), settings=CFG, finetune_views=views, zero_shot=None,
                      seed=0, batch_size=64, say=lines)
    meta = {"mean": list(MEAN), "std": list(STD), "encoder": "small_cnn", "encoder_kwargs": {"width": 8},
            "channels": 1, "image_size": 8}
    torch.manual_seed(7)
    trained = modality.build_encoder("small_cnn", {"width": 8}, meta)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))  # weights that differ from random init
    mine, _, _ = modality.evaluate(ctx, trained, ds, meta, tmp_path, "run")
    torch.manual_seed(0)
    fresh = modality.build_encoder("small_cnn", {"width": 8}, meta)
    ref, _, _ = modality.evaluate(ctx, fresh, ds, meta, tmp_path, "run random init", False)
    assert set(mine) == set(ref) == {"finetune/top1", "semi_10pct/top1"}
    budget = re.compile(r"^(run(?: random init)?): (finetune|semi_10pct): fine-tuning (.*) \.\.\.$")
    found = [m.groups() for line in lines if (m := budget.match(line))]
    by_label = {label: {p: b for lbl, p, b in found if lbl == label} for label in ("run", "run random init")}
    assert by_label["run"] == by_label["run random init"] and set(by_label["run"]) == {"finetune", "semi_10pct"}
    steps = CFG.finetune_epochs * -(-n_train // CFG.finetune_batch_size)
    assert by_label["run"]["finetune"].startswith(
        f"{n_train} labelled examples for 2 epochs (batch 128, {steps} steps, lr 0.001, views [crop 0.6-1])")
    assert ImageViewConfig(crop_scale=(0.2, 1.0), hflip_p=0.5, jitter_p=0.8).short() == \
        "crop 0.2-1, flip 0.5, jitter 0.8, grey 0.2"  # a short form, not the dataclass's repr


def test_which_modalities_fine_tune() -> None:
    """Images, text and the image tower of image-text data run ``finetune``; graph encoders (full-batch node
    classification, no 1% / 10% protocol to share settings with) skip it, as they skip the semi protocols."""
    from ssl_tasks.core.modality import applicable

    wanted = ("knn", "semi_10pct", "finetune")
    assert {m: applicable(wanted, get_modality(m).protocol_kinds) for m in ("image", "image_text", "text", "graph")} \
        == {"image": list(wanted), "image_text": list(wanted), "text": list(wanted), "graph": ["knn"]}
