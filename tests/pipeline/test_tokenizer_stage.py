"""The tokenizer@<dataset> stage on real digits, and how BEiT runs are wired to its output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.visual_tokenizer import PatchTokenizer
from ssl_tasks.pipeline.cli import main
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.params import load_params, parse_params
from ssl_tasks.pipeline.pretrain import job_objective_config

REPO = Path(__file__).resolve().parents[2]


def _beit_params(tmp_path: Path, **encoder: int) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runs"] = {"beit": {"dataset": "digits", "objective": "beit", "encoder": "vit",
                            "encoder_kwargs": {"patch_size": 2, "width": 32, "depth": 1, "heads": 2, **encoder}}}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_tokenizer_stage_writes_a_loadable_tokenizer_and_beit_finds_it(tmp_path: Path, digits_dataset: Path) -> None:
    shutil.copytree(digits_dataset, tmp_path / "data" / "digits")
    p = _beit_params(tmp_path)
    assert main(["--params", str(p), "--root", str(tmp_path), "tokenizer", "--dataset", "digits"]) == 0
    out = tmp_path / "artifacts" / "tokenizers" / "digits"
    assert sorted(f.name for f in out.iterdir()) == ["summary.json", "tokenizer.pt"]
    tok = PatchTokenizer.load(out / "tokenizer.pt", patch_size=2, channels=1)
    assert tok.num_codes == 64  # params.yaml: datasets.digits.tokenizer
    cfg = job_objective_config(load_params(p), "beit", Layout(tmp_path))
    assert cfg.tokenizer == str((out / "tokenizer.pt").resolve())
    first = (out / "tokenizer.pt").read_bytes()
    assert main(["--params", str(p), "--root", str(tmp_path), "tokenizer", "--dataset", "digits"]) == 0
    assert (out / "tokenizer.pt").read_bytes() == first  # deterministic: DVC sees the same output


def test_patch_size_mismatch_is_refused_when_params_are_read(tmp_path: Path) -> None:
    raw = yaml.safe_load(_beit_params(tmp_path, patch_size=4).read_text())
    with pytest.raises(UserError, match=r"patch_size 4 differs from datasets.digits.tokenizer.patch_size 2"):
        parse_params(raw)


def test_non_tokenizer_objectives_are_untouched(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    assert job_objective_config(params, "simclr", Layout(tmp_path)) == params.run("simclr").objective_config


def test_pretrained_files_resolve_against_the_project_or_say_which_key_is_missing(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "configs" / "clip.yaml").read_text())
    raw["runs"]["lit"] = {**raw["runs"]["clip"], "objective_kwargs": {
        **raw["runs"]["clip"]["objective_kwargs"], "init_image": "artifacts/pretrain/simclr/seed-0/encoder.pt"}}
    params, layout = parse_params(raw), Layout(tmp_path)
    with pytest.raises(UserError, match=r"runs.lit.objective_kwargs.init_image: .*encoder.pt does not exist"):
        job_objective_config(params, "lit", layout)
    enc = tmp_path / "artifacts" / "pretrain" / "simclr" / "seed-0" / "encoder.pt"
    enc.parent.mkdir(parents=True)
    enc.write_bytes(b"")
    assert job_objective_config(params, "lit", layout).init_image == str(enc.resolve())
