"""Checkpoint compatibility of the token encoders and masked autoencoders: the parameter names of the image ViT,
video_vit, MAE and VideoMAE (which share core.encoders.TokenEncoder and objectives.mae.MaskedDecoder) are the ones
checkpoints written before that sharing hold, and such a state_dict loads with weights_only=True, strictly.

The literal lists below were printed from freshly built models (depth 2 encoder and decoder) at commit a266081,
before the shared classes existed; a renamed or reordered parameter fails here.
"""

from __future__ import annotations

import io

import pytest
import torch

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.video.spec import VideoDataSpec
from ssl_tasks.objectives import OBJECTIVES, DataSpec

TRUNK_KEYS = [
    "cls_token", "embed.weight", "embed.bias", "blocks.0.self_attn.in_proj_weight",
    "blocks.0.self_attn.in_proj_bias", "blocks.0.self_attn.out_proj.weight", "blocks.0.self_attn.out_proj.bias",
    "blocks.0.linear1.weight", "blocks.0.linear1.bias", "blocks.0.linear2.weight", "blocks.0.linear2.bias",
    "blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.norm2.weight", "blocks.0.norm2.bias",
    "blocks.1.self_attn.in_proj_weight", "blocks.1.self_attn.in_proj_bias", "blocks.1.self_attn.out_proj.weight",
    "blocks.1.self_attn.out_proj.bias", "blocks.1.linear1.weight", "blocks.1.linear1.bias",
    "blocks.1.linear2.weight", "blocks.1.linear2.bias", "blocks.1.norm1.weight", "blocks.1.norm1.bias",
    "blocks.1.norm2.weight", "blocks.1.norm2.bias", "norm.weight", "norm.bias",
]

# the same blocks and final norm as the trunk after its [CLS] token, then the prediction head
DECODER_KEYS = ["mask_token", *TRUNK_KEYS[1:], "head.weight", "head.bias"]


def _vit() -> torch.nn.Module:
    return ENCODERS.get("vit")(in_channels=3, image_size=16, patch_size=4, width=32, depth=2, heads=4)


def _video_vit() -> torch.nn.Module:
    return ENCODERS.get("video_vit")(in_channels=1, frames=4, image_size=16, tubelet=2, patch_size=4, width=36,
                                     depth=2, heads=4)


def _mae() -> torch.nn.Module:
    return OBJECTIVES.get("mae")(_vit(), OBJECTIVES.get("mae").Config(), DataSpec(3, 16, (0.5,) * 3, (0.25,) * 3))


def _videomae() -> torch.nn.Module:
    return OBJECTIVES.get("videomae")(_video_vit(), OBJECTIVES.get("videomae").Config(),
                                      VideoDataSpec(4, 1, 16, 16, (0.3,), (0.2,)))


OBJECTIVE_KEYS = [f"encoder.{k}" for k in TRUNK_KEYS] + [f"decoder.{k}" for k in DECODER_KEYS]
CASES = {"vit": (_vit, TRUNK_KEYS), "video_vit": (_video_vit, TRUNK_KEYS), "mae": (_mae, OBJECTIVE_KEYS),
         "videomae": (_videomae, OBJECTIVE_KEYS)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_keys_are_the_ones_earlier_checkpoints_hold(name: str) -> None:
    build, keys = CASES[name]
    assert list(build().state_dict()) == keys


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_saved_state_dict_loads_with_weights_only_into_a_fresh_model(name: str) -> None:
    build, _ = CASES[name]
    torch.manual_seed(0)
    saved = build().state_dict()
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    fresh = build()
    fresh.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())
