"""One recipe per objective for the benchmarks on 28x28 / 32x32 images: objective kwargs, encoder, learning rate.

Shared by ``fashion_mnist.py`` (quality), ``cifar_jpeg.py`` (colour) and ``throughput.py`` (cost), so every
table uses the same settings. CNN objectives use ``small_cnn`` (width 16, the 7x7 feature map kept:
``pool: 7``); objectives that need a token sequence, and MoCo v3 (a ViT method), use a small ViT with 4x4 patches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VIEWS = {"crop_scale": [0.3, 1.0], "hflip_p": 0.5, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4}
CNN = {"width": 16, "pool": 7}
VIT = {"patch_size": 4, "width": 96, "depth": 4, "heads": 4, "pool": "mean"}


@dataclass(frozen=True)
class Recipe:
    objective_kwargs: dict[str, Any]
    encoder: str = "small_cnn"
    encoder_kwargs: dict[str, Any] = field(default_factory=lambda: dict(CNN))
    lr: float = 4e-3
    needs_colour: bool = False


RECIPES: dict[str, Recipe] = {
    "simclr": Recipe({"temperature": 0.2, "views": VIEWS}),
    "moco_v2": Recipe({"queue_size": 4096, "momentum": 0.99, "temperature": 0.2, "symmetric": True, "views": VIEWS}),
    "byol": Recipe({"base_momentum": 0.99, "views": VIEWS}),
    "simsiam": Recipe({"views": VIEWS}),
    "barlow_twins": Recipe({"views": VIEWS}),
    "vicreg": Recipe({"views": VIEWS}),
    "dino": Recipe({"num_prototypes": 1024, "base_momentum": 0.99, "crops": {"local_crops": 4},
                    "views": {"hflip_p": 0.5, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4}}),
    "moco_v3": Recipe({"temperature": 0.2, "views": VIEWS}, encoder="vit", encoder_kwargs=dict(VIT), lr=1e-3),
    "mae": Recipe({"mask_ratio": 0.75}, encoder="vit", encoder_kwargs=dict(VIT), lr=1e-3),
    "beit": Recipe({}, encoder="vit", encoder_kwargs=dict(VIT), lr=1e-3),  # tokenizer: 4x4 patches, 256 codes
    "ijepa": Recipe({}, encoder="vit", encoder_kwargs=dict(VIT), lr=1e-3),
    "rotation": Recipe({}),
    "relative_position": Recipe({}),
    "jigsaw": Recipe({"tile_size": 14}),  # 9 tiles per image: 14x14 inputs keep it ~3x cheaper than 28x28
    "colorization": Recipe({}, needs_colour=True),
}
