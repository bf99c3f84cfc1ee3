"""Per-objective settings shared by the contract and DDP tests (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ssl_tasks.objectives import DataSpec


@dataclass(frozen=True)
class Case:
    """How the contract tests build one objective: small kwargs, the encoder it runs with, the data it fits."""

    objective_kwargs: dict = field(default_factory=dict)
    encoder: str = "small_cnn"
    encoder_kwargs: dict = field(default_factory=lambda: {"width": 8})
    colour: bool = False  # True: 3-channel data (the colour fixture) instead of grayscale digits


TINY_VIT = {"patch_size": 2, "width": 32, "depth": 2, "heads": 2}
# Every registered objective must have a case here (test_every_objective_has_a_case); the default is fine for most.
CASES: dict[str, Case] = {
    "rotation": Case(), "relative_position": Case(), "jigsaw": Case(), "colorization": Case(colour=True),
    "simclr": Case(), "byol": Case(), "simsiam": Case(), "barlow_twins": Case(), "vicreg": Case(),
    "moco_v2": Case({"queue_size": 64}),
    "moco_v3": Case(encoder="vit", encoder_kwargs=TINY_VIT),
    "mae": Case({"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}, encoder="vit", encoder_kwargs=TINY_VIT),
    "ijepa": Case({"pred_width": 16, "pred_depth": 1, "pred_heads": 2}, encoder="vit",
                  encoder_kwargs={**TINY_VIT, "pool": "mean"}),
    "dino": Case({"num_prototypes": 64, "hidden_dim": 64, "bottleneck_dim": 32, "crops": {"local_crops": 2}}),
    "beit": Case({"tokenizer": ""}, encoder="vit", encoder_kwargs=TINY_VIT),  # path set by the `name` fixture
}
GREY = DataSpec(channels=1, image_size=8, mean=(0.3,), std=(0.37,))
COLOUR = DataSpec(channels=3, image_size=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


def spec_for(name: str) -> DataSpec:
    return COLOUR if CASES[name].colour else GREY
