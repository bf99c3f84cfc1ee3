"""The speech pipeline through `dvc repro` on a copy of the project with `configs/speech.yaml`: a few hundred real
FSDD clips (read from the shared tar through a subset of labels.csv) ingested and validated, the HuBERT MFCC k-means
targets stage, the MFCC baseline, one epoch of pretraining, evaluation with speakers held out next to random init,
and the leaderboard.

The runs are configs/speech.yaml's wav2vec 2.0 and HuBERT, shrunk below (one epoch, 20 target clusters).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SHARED_DATA
from helpers import copy_project, needs_shared, noop_repro, repro

pytestmark = pytest.mark.slow

RUNS = ("wav2vec2", "hubert")
FSDD = SHARED_DATA / "fsdd"


def _subset(dest: Path) -> Path:
    """labels.csv restricted to takes 0-2 (upstream test) and 5-8 (train) of every speaker and digit: 420 clips."""
    table = pd.read_csv(FSDD / "labels.csv")
    keep = table[(table["index"] < 3) | ((table["index"] >= 5) & (table["index"] < 9))].copy()
    keep.to_csv(dest, index=False)
    return dest


@needs_shared(FSDD / "fsdd_recordings.tar", "FSDD")
def test_speech_dag_end_to_end(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    raw = yaml.safe_load((root / "configs" / "speech.yaml").read_text())
    fsdd = raw["datasets"]["fsdd"]
    fsdd["path"] = str(_subset(tmp_path / "labels.csv"))
    fsdd["options"]["root"] = str(FSDD / "fsdd_recordings.tar")
    fsdd["validation"].update(min_class_fraction=None, max_class_fraction=None)  # 42 clips a digit: still balanced
    fsdd["tokenizer"] = {"num_clusters": 20, "seed": 0, "n_init": 1}
    raw["runs"] = {r: raw["runs"][r] for r in RUNS}
    raw["runs"]["hubert"]["objective_kwargs"]["num_clusters"] = 20  # as many as the targets stage makes
    for run in raw["runs"].values():
        run["train"] = {"epochs": 1}
    raw["train"].update(batch_size=32, warmup_epochs=0, stop_on_collapse=False)  # one epoch: no verdict
    raw["evaluation"]["protocols"] = ["knn", "linear", "semi_10pct"]
    raw["evaluation"]["settings"].update(finetune_epochs=1)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    res = repro(root)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    board = pd.read_csv(root / "artifacts" / "leaderboard.csv").set_index("name")
    assert set(RUNS) | {"mfcc_stats@fsdd"} <= set(board.index)
    for run in RUNS:
        assert str(board.loc[run, "reference"]).startswith("random_init-"), run
    for col in ("knn/top1", "linear/top1", "semi_10pct/top1"):
        assert board[col].between(0.0, 1.0).all(), col
    assert board.loc["mfcc_stats@fsdd", "linear/top1"] > 0.4  # held-out speakers; ~0.7 on all 3,000 clips
    report = yaml.safe_load((root / "reports" / "validate" / "fsdd.json").read_text())
    assert report["success"] and report["audio"]["groups"] == 6 and report["n_samples"] == {"train": 240, "test": 180}
    tok = yaml.safe_load((root / "artifacts" / "tokenizers" / "fsdd" / "summary.json").read_text())
    assert tok["tokenizer"] == "mfcc_kmeans" and tok["frames_per_clip"] == 49
    again = repro(root)
    assert noop_repro(again), again.stdout
