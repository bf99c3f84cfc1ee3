"""The k-means patch tokenizer BEiT predicts: seeded fit, nearest-code assignment, file round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.modalities.image.visual_tokenizer import EPS, PatchTokenizer, fit_patch_kmeans, train_tokenizer


@pytest.fixture(scope="module")
def fitted(digits_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.pt"
    return path, train_tokenizer(digits_dataset, path, patch_size=2, num_codes=16, seed=0, max_patches=4000)


def test_fit_is_deterministic_under_a_seed(digits_dataset: Path) -> None:
    a, b = (fit_patch_kmeans(digits_dataset, 2, 8, 2000, seed=0) for _ in range(2))
    assert a.shape == (8, 4) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, fit_patch_kmeans(digits_dataset, 2, 8, 2000, seed=1))


def test_equal_fits_write_byte_identical_files(digits_dataset: Path, tmp_path: Path) -> None:
    """Same data and arguments: same bytes, so a pipeline sees an unchanged tokenizer as unchanged."""
    for name in ("a.pt", "b.pt"):
        train_tokenizer(digits_dataset, tmp_path / name, patch_size=2, num_codes=8, seed=0, max_patches=1000)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def _reference_ids(images: np.ndarray, codebook: np.ndarray, p: int) -> np.ndarray:
    """Slow and obvious: every patch, standardised by its own mean/var, against every code, in float64."""
    n, _, h, w = images.shape
    out = np.zeros((n, (h // p) * (w // p)), dtype=np.int64)
    for i in range(n):
        for r in range(h // p):
            for c in range(w // p):
                patch = images[i, :, r * p:(r + 1) * p, c * p:(c + 1) * p].astype(np.float64).reshape(-1) / 255
                f = (patch - patch.mean()) / np.sqrt(patch.var() + EPS)
                dists = [float(((f - code) ** 2).sum()) for code in codebook.astype(np.float64)]
                out[i, r * (w // p) + c] = int(np.argmin(dists))
    return out


def test_assignments_equal_brute_force_nearest_code(fitted: tuple[Path, dict], digits_dataset: Path) -> None:
    tok = PatchTokenizer.load(fitted[0])
    images = ImageDataset(digits_dataset).load("test")[0][:60]
    ids = tok(torch.from_numpy(images))
    assert ids.shape == (60, 16) and ids.dtype == torch.long
    assert np.array_equal(ids.numpy(), _reference_ids(images, tok.codebook.numpy(), 2))
    assert torch.equal(tok(torch.from_numpy(images).float() / 255), ids)  # uint8 and [0, 1] floats agree
    assert ids.unique().numel() > 4  # real digits use many codes, not one


def test_codebook_is_a_frozen_buffer(fitted: tuple[Path, dict]) -> None:
    tok = PatchTokenizer.load(fitted[0])
    assert list(tok.parameters()) == [] and not tok.codebook.requires_grad
    assert list(tok.state_dict()) == ["codebook"]


def test_save_load_round_trip_with_weights_only(fitted: tuple[Path, dict], digits_dataset: Path,
                                                tmp_path: Path) -> None:
    path, summary = fitted
    state = torch.load(path, weights_only=True)
    meta = json.loads(state["meta"])
    assert meta["patch_size"] == 2 and meta["channels"] == 1 and meta["num_codes"] == 16
    assert meta["dataset_sha256"] == summary["dataset_sha256"] and len(meta["dataset_sha256"]) == 64
    tok = PatchTokenizer.load(path, patch_size=2, channels=1)
    tok.save(tmp_path / "again.pt")
    again = PatchTokenizer.load(tmp_path / "again.pt")
    assert torch.equal(again.codebook, state["codebook"]) and again.meta == tok.meta
    x = torch.from_numpy(ImageDataset(digits_dataset).load("test")[0][:8])
    assert torch.equal(again(x), tok(x))


def test_summary_is_json_and_sane(fitted: tuple[Path, dict]) -> None:
    summary = json.loads(json.dumps(fitted[1]))
    assert summary["num_codes"] == 16 and 1 < summary["codes_used"] <= 16
    assert summary["patches"] == 4000 and summary["inertia"] >= 0 and summary["seconds"] >= 0


def test_missing_corrupt_and_mismatched_files_are_user_errors(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        PatchTokenizer.load(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a tokenizer")
    with pytest.raises(UserError, match="not a valid tokenizer file"):
        PatchTokenizer.load(junk)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(fitted[0].read_bytes()[:200])
    with pytest.raises(UserError, match="not a valid tokenizer file"):
        PatchTokenizer.load(cut)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="not a valid tokenizer file"):
        PatchTokenizer.load(other)
    with pytest.raises(UserError, match="patch_size=4"):
        PatchTokenizer.load(fitted[0], patch_size=4)
    with pytest.raises(UserError, match="3 channels"):
        PatchTokenizer.load(fitted[0], channels=3)


def test_bad_fit_arguments_are_user_errors(digits_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="num_codes"):
        fit_patch_kmeans(digits_dataset, 2, 500, 100, seed=0)
    with pytest.raises(UserError, match="patch_size"):
        fit_patch_kmeans(digits_dataset, 16, 8, 100, seed=0)
    with pytest.raises(UserError, match="not an ingested dataset"):
        fit_patch_kmeans(tmp_path, 2, 8, 100, seed=0)
