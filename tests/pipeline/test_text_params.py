"""Text runs are checked when params are read: modality, encoder capabilities, tokenizer keys, the profile."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.text.modality import TextTokenizerConfig as TextTokenizerParams
from ssl_tasks.pipeline.params import load_params, parse_params

REPO = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((REPO / "configs" / "text.yaml").read_text())


def with_edit(edit) -> dict:
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


def test_text_profile_parses() -> None:
    p = load_params(REPO / "configs" / "text.yaml")
    assert p.dataset("sst2").modality == "text" and p.dataset("shakespeare").modality == "text"
    assert p.dataset("sst2").tokenizer_params() == TextTokenizerParams(vocab_size=4096, num_sentinels=32)
    assert {r.objective for r in p.runs.values()} == {"mlm", "causal_lm", "span_corruption", "simcse"}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["runs"]["mlm"].update(encoder="small_cnn"), "encodes image, but the data is text"),
    (lambda r: r["runs"]["mlm"].update(encoder="causal_transformer"), "lacks ['bidirectional']"),
    (lambda r: r["runs"]["causal_lm"].update(encoder="text_transformer"), "lacks ['causal']"),
    (lambda r: r["runs"]["span_corruption"].update(encoder="text_transformer"), "lacks ['seq2seq']"),
    (lambda r: r["runs"]["mlm"].update(objective="simclr"), "does not support modality 'text'"),
    (lambda r: r["datasets"]["sst2"].update(tokenizer={"patch_size": 2}), "unknown key(s) patch_size"),
    (lambda r: r["datasets"]["sst2"].update(tokenizer={"vocab_size": 100}), "vocab_size must be >= 300"),
    (lambda r: r["runs"]["mlm"].update(objective_kwargs={"nsp": True, "layout": "pad"}), "nsp builds sentence"),
    (lambda r: r["baselines"].update(text_encoder="small_cnn"), "is not a text encoder"),
])
def test_text_mistakes_are_named(edit, message: str) -> None:
    with pytest.raises(UserError) as e:
        parse_params(with_edit(edit))
    assert message in str(e.value)


def test_image_runs_refuse_text_encoders() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runs"]["simclr"]["encoder"] = "text_transformer"
    with pytest.raises(UserError, match="does not support modality .image.|encodes text"):
        parse_params(raw)


def test_workspace_params_anchor_relative_dataset_paths(tmp_path: Path) -> None:
    from ssl_tasks.orchestration.overrides import anchor_paths

    out = anchor_paths(RAW, tmp_path)
    assert out["datasets"]["sst2"]["path"] == str((tmp_path / "../shared/data/sst2").resolve())
    assert RAW["datasets"]["sst2"]["path"] == "../shared/data/sst2"  # the input is not modified
    assert anchor_paths({"datasets": {"d": {"source": "sklearn_digits"}}}, tmp_path) == \
        {"datasets": {"d": {"source": "sklearn_digits"}}}
