"""The video pipeline through `dvc repro` on a copy of the project with `configs/video.yaml`: moving Fashion-MNIST
sprites (read from the shared IDX files) ingested and validated, the raw-pixel baseline, one epoch of VideoMAE on
Ray Train, evaluation on every label set next to random init, and the leaderboard; a second repro does nothing.

configs/video.yaml as shipped, shrunk below: fewer and shorter clips, one epoch, a narrower encoder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SHARED_DATA
from helpers import copy_project, needs_shared, noop_repro, repro

pytestmark = pytest.mark.slow

FMNIST = SHARED_DATA / "fashion_mnist"
SMALL = {"tubelet": 2, "patch_size": 8, "width": 32, "depth": 1, "heads": 2}


@needs_shared(FMNIST / "train-images-idx3-ubyte.gz", "Fashion-MNIST")
def test_video_dag_end_to_end(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    raw = yaml.safe_load((root / "configs" / "video.yaml").read_text())
    sprites = raw["datasets"]["sprites"]
    sprites["path"] = str(FMNIST)
    sprites["options"].update(frames=8, train_clips=320, test_clips=160)
    raw["runs"]["videomae"].update(encoder_kwargs=SMALL, train={"epochs": 1})
    raw["train"].update(warmup_epochs=0, stop_on_collapse=False)  # one epoch: no verdict
    raw["evaluation"]["protocols"] = ["knn", "linear", "semi_10pct"]
    raw["evaluation"]["settings"].update(finetune_epochs=1)
    raw["baselines"].update(include=["raw_pixels"], encoder_kwargs=SMALL)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    res = repro(root)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    board = pd.read_csv(root / "artifacts" / "leaderboard.csv").set_index("name")
    assert {"videomae", "raw_pixels@sprites"} <= set(board.index)
    assert str(board.loc["videomae", "reference"]).startswith("random_init-")
    for col in ("knn/top1", "linear/top1", "semi_10pct/top1"):
        assert board[col].between(0.0, 1.0).all(), col
    rows = yaml.safe_load((root / "metrics" / "eval" / "run-videomae.json").read_text())["rows"]
    for row in rows.values():  # the run and its random-init reference: every label set probed
        for key in ("linear/class_top1", "linear/speed_top1", "knn/class_top1", "knn/speed_top1"):
            assert 0.0 <= row["metrics"][key] <= 1.0, (key, row["metrics"])
    report = yaml.safe_load((root / "reports" / "validate" / "sprites.json").read_text())
    assert report["success"] and report["n_samples"] == {"train": 320, "test": 160}
    manifest = yaml.safe_load((root / "data" / "sprites" / "manifest.json").read_text())
    assert manifest["format"] == "ssl-tasks-video/v1" and manifest["synthetic"] is True
    again = repro(root)
    assert noop_repro(again), again.stdout
