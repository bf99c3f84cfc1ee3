"""Objective fixtures: a tokenizer file for BEiT, fitted once per session on the real digits."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def beit_tokenizer(digits_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-code k-means tokenizer of 2x2 digit patches (the patch size of the tests' tiny ViT)."""
    from ssl_tasks.modalities.image.visual_tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("beit") / "tokenizer.pt"
    train_tokenizer(digits_dataset, path, patch_size=2, num_codes=16, seed=0, max_patches=5000)
    return path
