"""The classic image pretext tasks: labels name the transformation applied, and a few steps learn them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_tasks.core.config import build
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.objectives import OBJECTIVES, DataSpec, Objective
from ssl_tasks.objectives.colorization import ab_bins, rgb_to_lab
from ssl_tasks.objectives.jigsaw import all_permutations, permutation_set
from ssl_tasks.objectives.relative_position import CENTRE, NEIGHBOURS
from ssl_tasks.objectives.rotation import rotate

GREY_MSG = re.escape("colorization needs colour (3-channel) images; dataset has 1 channel")
IDENTITY = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "hflip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0}


def make(name: str, kwargs: dict, spec: DataSpec, width: int = 8) -> Objective:
    torch.manual_seed(0)
    cls = OBJECTIVES.get(name)
    cfg = build(cls.Config, kwargs, name)
    return cls(build_encoder("small_cnn", spec.channels, spec.image_size, width=width), cfg, spec)


def plain(size: int, channels: int = 1) -> DataSpec:
    """Identity normalisation, so views are images / 255."""
    return DataSpec(channels=channels, image_size=size, mean=(0.0,) * channels, std=(1.0,) * channels)


def cell_image(b: int, size: int = 30) -> torch.Tensor:
    """(b, 1, size, size) uint8: grid cell k (reading order) is filled with the value 10 * (k + 1)."""
    r = torch.arange(size) * 3 // size  # (size,) grid row/column of each pixel
    cells = r[:, None] * 3 + r[None, :]  # (size, size)
    return (10 * (cells + 1)).to(torch.uint8).expand(b, 1, size, size).clone()


def tile_values(tiles: torch.Tensor) -> torch.Tensor:
    """(B, T, 1, P, P) tiles of ``cell_image`` -> (B, T) cell index each tile's mean is closest to."""
    mean = tiles.mean(dim=(2, 3, 4)) * 255  # (B, T)
    return (mean / 10 - 1).round().long()


# ----------------------------------------------------------------------------- rotation


def test_rotate_matches_rot90_per_sample_and_is_undone() -> None:
    x = torch.rand(5, 2, 6, 6)
    k = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0], [1, 3]])
    y = rotate(x, k)  # (5, 2, 2, 6, 6)
    for b in range(5):
        for v in range(2):
            assert torch.equal(y[b, v], torch.rot90(x[b], int(k[b, v]), dims=(1, 2)))
        assert torch.equal(rotate(y[b : b + 1, 0], -k[b : b + 1, :1])[0, 0], x[b])


def test_rotation_labels_name_the_rotation_applied() -> None:
    obj = make("rotation", {"copies": 3, "views": IDENTITY}, plain(8))
    x = torch.randint(0, 256, (32, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    rotated, k = obj.make_views(x, torch.Generator().manual_seed(1))
    assert rotated.shape == (32, 3, 1, 8, 8) and k.shape == (32, 3) and k.dtype == torch.long
    assert all(len(set(row)) == 3 for row in k.tolist())  # distinct rotations of each image
    assert len(set(k[:, 0].tolist())) == 4  # every rotation drawn
    for v in range(3):
        undone = rotate(rotated[:, v], -k[:, v : v + 1])[:, 0]  # (B, 1, 8, 8)
        torch.testing.assert_close(undone, x.float() / 255)


# ----------------------------------------------------------------------------- relative position


@pytest.mark.parametrize("jitter", [False, True])
def test_relative_position_label_names_the_neighbour_cut(jitter: bool) -> None:
    obj = make("relative_position", {"jitter": jitter, "views": IDENTITY}, plain(30))
    patches, label = obj.make_views(cell_image(64), torch.Generator().manual_seed(0))
    assert patches.shape == (64, 2, 1, 30, 30) and label.shape == (64,)
    cells = tile_values(patches)  # (B, 2)
    assert (cells[:, 0] == CENTRE).all()
    assert torch.equal(cells[:, 1], torch.tensor(NEIGHBOURS)[label])
    assert len(set(label.tolist())) == 8
    if not jitter:  # tiles strictly inside their cells: exactly constant
        torch.testing.assert_close(patches.amax(dim=(2, 3, 4)), patches.amin(dim=(2, 3, 4)))


def test_neighbour_labels_are_in_reading_order() -> None:
    assert NEIGHBOURS == (0, 1, 2, 3, 5, 6, 7, 8) and CENTRE == 4  # label 0: top-left, 7: bottom-right


# ----------------------------------------------------------------------------- jigsaw


def test_undoing_the_permutation_recovers_the_tiles() -> None:
    obj = make("jigsaw", {"permutations": 24, "views": IDENTITY}, plain(30))
    tiles, label = obj.make_views(cell_image(48), torch.Generator().manual_seed(0))
    assert tiles.shape == (48, 9, 1, 30, 30) and label.shape == (48,)
    perms = permutation_set(24)
    assert torch.equal(tile_values(tiles), perms[label])  # slot s holds the tile of cell perm[s]
    inverse = perms[label].argsort(dim=1)  # (B, 9)
    unshuffled = tiles[torch.arange(48)[:, None], inverse]  # (B, 9, 1, 30, 30)
    assert torch.equal(tile_values(unshuffled), torch.arange(9).expand(48, 9))
    assert len(set(label.tolist())) > 12


def test_all_permutations_matches_itertools() -> None:
    import itertools

    assert np.array_equal(all_permutations(5), np.array(list(itertools.permutations(range(5)))))
    assert all_permutations(9).shape == (362880, 9)


@pytest.mark.parametrize("count,min_distance", [(24, 7), (64, 7), (100, 6)])
def test_permutation_set_unique_and_far_apart(count: int, min_distance: int) -> None:
    p = permutation_set(count)
    assert p.shape == (count, 9) and p.dtype == torch.long
    assert (p.sort(dim=1).values == torch.arange(9)).all()  # each row a permutation of 0..8
    assert len({tuple(r) for r in p.tolist()}) == count
    d = (p[:, None, :] != p[None, :, :]).sum(dim=2)  # (P, P) Hamming distances
    off = d[~torch.eye(count, dtype=torch.bool)]
    assert int(off.min()) >= min_distance
    rand = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(count)])
    dr = (rand[:, None, :] != rand[None, :, :]).sum(dim=2)[~torch.eye(count, dtype=torch.bool)]
    assert int(off.min()) > int(dr.min())  # greedy maximin beats a random set


def test_permutation_set_is_deterministic_in_its_seed() -> None:
    permutation_set.cache_clear()
    a = permutation_set(16, seed=3)
    permutation_set.cache_clear()
    assert torch.equal(a, permutation_set(16, seed=3))
    assert not torch.equal(a, permutation_set(16, seed=4))


# ----------------------------------------------------------------------------- colorization


def test_lab_conversion_known_values() -> None:
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]).view(4, 3, 1, 1)
    lab, _ = rgb_to_lab(rgb)
    want = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [53.39, 0.0, 0.0]])
    torch.testing.assert_close(lab.view(4, 3), want, atol=0.05, rtol=0)


def test_ab_bins_grid() -> None:
    ab = torch.tensor([[-110.0, -110.0], [0.0, 0.0], [109.0, 109.0], [-5.0, 15.0]]).view(4, 2, 1, 1)
    assert ab_bins(ab, 20.0).view(-1).tolist() == [0, 5 * 11 + 5, 120, 5 * 11 + 6]


def test_colorization_encoder_sees_only_lightness() -> None:
    spec = DataSpec(channels=3, image_size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    obj = make("colorization", {"target_size": 16, "views": IDENTITY}, spec)
    x = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    (v, _) = obj.make_views(x, torch.Generator().manual_seed(0))
    grey, lightness, target = obj.split(v)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    grey_rgb = grey * std + mean  # (B, 3, S, S)
    assert (grey_rgb - grey_rgb[:, :1]).abs().max() < 1e-5  # r = g = b
    lab_grey, _ = rgb_to_lab(grey_rgb)
    lab, _ = rgb_to_lab(x.float() / 255)
    torch.testing.assert_close(lab_grey[:, 0], lab[:, 0], atol=0.05, rtol=0)  # same L ...
    assert lab_grey[:, 1:].abs().max() < 0.05  # ... and no colour
    torch.testing.assert_close(lightness, lab[:, :1] / 50 - 1, atol=1e-3, rtol=0)
    assert torch.equal(target, ab_bins(lab[:, 1:], 20.0))



def test_colorization_refuses_grayscale_in_check_data() -> None:
    cls = OBJECTIVES.get("colorization")
    with pytest.raises(UserError, match=GREY_MSG + "$"):
        cls.check_data(plain(8))
    cls.check_data(plain(8, channels=3))  # colour is fine
    with pytest.raises(UserError, match="needs colour"):
        make("colorization", {}, plain(8))  # constructing it directly refuses too


def test_colorization_views_must_not_jitter_colour() -> None:
    cls = OBJECTIVES.get("colorization")
    with pytest.raises(UserError, match="jitter_p and views.grayscale_p must be 0"):
        build(cls.Config, {"views": {"jitter_p": 0.8}}, "runs.c.objective_kwargs")


def test_colorization_refuses_grayscale_before_training(digits_dataset: Path, tmp_path: Path) -> None:
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
    from ssl_tasks.training.loop import LocalSession, run_training

    job = TrainJob(run="c", seed=0, data_dir=str(digits_dataset), objective="colorization",
                   objective_config=objective_config("colorization", {}),
                   encoder="small_cnn", encoder_kwargs={"width": 8}, train=TrainConfig(epochs=1), mean=(0.3,),
                   std=(0.37,))
    session = LocalSession(tmp_path / "ckpt")
    with pytest.raises(UserError, match=GREY_MSG):
        run_training(job, session)
    assert session.reports == [] and session.latest_checkpoint() is None


def test_colorization_refuses_grayscale_in_the_pretrain_stage(digits_dataset: Path, tmp_path: Path) -> None:
    from ssl_tasks.pipeline.layout import Layout
    from ssl_tasks.pipeline.params import parse_params
    from ssl_tasks.pipeline.pretrain import pretrain

    params = parse_params({"datasets": {"digits": {"source": "sklearn_digits"}},
                           "runs": {"colour": {"dataset": "digits", "objective": "colorization",
                                               "encoder_kwargs": {"width": 8}}}})
    layout = Layout(tmp_path)
    shutil.copytree(digits_dataset, layout.data("digits"))
    with pytest.raises(UserError, match=GREY_MSG):
        pretrain(params, "colour", layout)
    # no tracking run, no artifacts: only the run's lock file (tests/faults/test_run_lock.py) beside its output
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "data" not in p.parts)
    assert left == ["artifacts", "artifacts/runs", "artifacts/runs/colour", "artifacts/runs/colour/.pretrain.lock"]


# ----------------------------------------------------------------------------- a few steps learn the task


def train_then_score(obj: Objective, train: torch.Tensor, test: torch.Tensor, steps: int, batch: int) -> float:
    """``steps`` AdamW steps on random train batches, then pretext accuracy on the test images.

    Scored with batch statistics (train mode, no gradient): after a few steps BatchNorm's running
    averages still lag the fast-moving weights.
    """
    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    obj.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (batch,), generator=g)
        res = obj(obj.make_views(train[idx], g))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    with torch.no_grad():
        return obj(obj.make_views(test, torch.Generator().manual_seed(1))).report["pretext_acc"]


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ImageDataset(path)
    return torch.from_numpy(ds.load("train")[0]), torch.from_numpy(ds.load("test")[0])


@pytest.mark.parametrize("name,kwargs,chance,steps", [
    ("rotation", {"copies": 2}, 1 / 4, 20),
    ("relative_position", {}, 1 / 8, 20),
    ("jigsaw", {"permutations": 24}, 1 / 24, 15),
])
def test_a_few_steps_beat_chance_on_digits(name: str, kwargs: dict, chance: float, steps: int,
                                           digits_dataset: Path) -> None:
    train, test = load(digits_dataset)
    obj = make(name, {**kwargs, "views": {**IDENTITY, "crop_scale": (0.8, 1.0)}}, DataSpec(1, 8, (0.3,), (0.37,)))
    acc = train_then_score(obj, train, test[:256], steps=steps, batch=128)
    assert acc > 2 * chance, acc  # typically ~0.8 (rotation), ~0.5 (position), ~0.95 (jigsaw)


def test_a_few_steps_colourise_above_chance(colour_dataset: Path) -> None:
    train, test = load(colour_dataset)
    spec = DataSpec(3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    obj = make("colorization", {"target_size": 8}, spec)
    acc = train_then_score(obj, train, test, steps=15, batch=64)
    assert acc > 30 / obj.bins, acc  # chance 1/121; typically ~0.5, as ~half the pixels fall in the grey bin
