"""The image-text pipeline through `dvc repro` on a copy of the project with `configs/clip.yaml`: a real Open Clip
Art subset, CLIP and SigLIP on Ray next to an image-only SimCLR, the towers' baselines, zero-shot and retrieval,
one leaderboard and the MLflow runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import CLIPART, clipart_table
from helpers import copy_project, noop_repro, repro

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
TINY_TEXT = {"max_len": 16, "width": 32, "depth": 1, "heads": 2}



@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("pairproj") / "p")
    data = tmp_path_factory.mktemp("pairdata")
    raw = yaml.safe_load((root / "configs" / "clip.yaml").read_text())
    ds = raw["datasets"]["clipart"]
    ds["path"] = str(clipart_table(data / "captions.tsv", every=3))  # 474 drawings; images read from shared/
    ds["options"].update(root=str(CLIPART), image_size=16)
    ds["tokenizer"]["vocab_size"] = 400
    for r in raw["runs"].values():
        r["encoder_kwargs"] = {"width": 8}
        if r["objective"] in ("clip", "siglip"):
            r["objective_kwargs"] = {"text_encoder_kwargs": dict(TINY_TEXT), "embed_dim": 16}
    raw["baselines"].update(encoder_kwargs={"width": 8}, supervised_epochs=1)
    raw["train"].update(epochs=2, batch_size=32, warmup_epochs=0)
    raw["evaluation"]["settings"].update(linear_epochs=20, finetune_epochs=1)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def test_image_text_dag_end_to_end(project: Path) -> None:
    res = repro(project)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    board = pd.read_csv(project / "artifacts" / "leaderboard.csv").set_index("name")
    refs = {board.loc[r, "reference"] for r in ("clip", "siglip", "simclr")}
    assert len(refs) == 3  # each its own random init: CLIP's and SigLIP's towers differ, SimCLR has none
    assert set(board.index) == {"clip", "siglip", "simclr", *refs, "raw_pixels@clipart", "supervised@clipart"}
    for col in ("knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1"):  # every image tower, one table
        assert board[col].between(0, 1).all(), col
    towers = ["clip", "siglip", board.loc["clip", "reference"], board.loc["siglip", "reference"], "raw_pixels@clipart"]
    for row in towers:  # trained towers, random-init towers of the same configs and the bag of words
        assert 0 <= board.loc[row, "zero_shot/top1"] <= 1 and 0 <= board.loc[row, "retrieval/r1"] <= 1
    assert pd.isna(board.loc["simclr", "zero_shot/top1"])  # no text tower: no zero-shot
    assert pd.isna(board.loc[board.loc["simclr", "reference"], "zero_shot/top1"])
    assert board.loc["clip", "retrieval/r1 margin"] == pytest.approx(
        board.loc["clip", "retrieval/r1"] - board.loc[board.loc["clip", "reference"], "retrieval/r1"], abs=2e-4)
    assert pd.isna(board.loc["supervised@clipart", "retrieval/r1"])
    assert "retrieval/r1" in (project / "artifacts" / "leaderboard.md").read_text()

    pre = project / "artifacts" / "runs" / "clip" / "pretrain" / "seed-0"
    assert (pre / "tokenizer.json").is_file() and (pre / "objective.pt").is_file()
    meta = json.loads((pre / "meta.json").read_text())
    assert meta["modality"] == "image_text" and meta["channels"] == 3 and meta["image_size"] == 16
    hist = json.loads((pre / "history.json").read_text())
    assert "train/logit_scale" in hist[-1] and "train/pair_accuracy" in hist[-1]
    sig = json.loads((project / "artifacts" / "runs" / "siglip" / "pretrain" / "seed-0" / "history.json").read_text())
    assert "train/bias" in sig[-1] and "train/temperature" in sig[-1]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    clip = runs["clip"]
    assert clip.data.tags["modality"] == "image_text"
    for key in ("eval/zero_shot/top1", "eval/retrieval/i2t_r5", "eval/retrieval/t2i_r10", "eval/knn/top1"):
        assert key in clip.data.metrics, key
    assert {a.path for a in client.list_artifacts(clip.info.run_id, "checkpoint")} >= {"checkpoint/tokenizer.json"}

    again = repro(project)
    assert noop_repro(again), again.stdout
