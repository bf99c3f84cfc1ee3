"""The modality plug-in contract: every registered modality runs ingest -> validate -> pretrain -> evaluate ->
compare through the real stages, and a modality defined outside the library (tests/toy_modality.py) does so
under ``dvc repro`` with no edit to ssl_tasks/pipeline/, flows/ or dvc.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import copy_project, noop_repro, repro

from ssl_tasks.core.modality import MODALITIES, Modality, get_modality

# Where each built-in modality runs end to end through `dvc repro` (a new modality must add its case).
END_TO_END = {
    "image": "tests/pipeline/test_dvc_pipeline.py::test_full_dag_then_noop_then_targeted_rerun",
    "text": "tests/pipeline/test_text_pipeline.py",
    "image_text": "tests/pipeline/test_pair_pipeline.py",
    "graph": "tests/pipeline/test_graph_pipeline.py",
    "speech": "tests/pipeline/test_speech_pipeline.py",
    "video": "tests/pipeline/test_video_pipeline.py",
}
TESTS = Path(__file__).resolve().parents[1]


def test_every_registered_modality_has_an_end_to_end_case() -> None:
    get_modality("image")  # fills the registry
    assert sorted(END_TO_END) == MODALITIES.names()
    for where in END_TO_END.values():
        assert (TESTS.parent / where.split("::")[0]).is_file(), where


@pytest.mark.parametrize("name", ["image", "text", "image_text", "graph", "speech", "video"])
def test_modalities_declare_the_interface(name: str) -> None:
    m = get_modality(name)
    assert isinstance(m, Modality) and m.name == name and m.trains[0] == name
    assert m.formats and m.protocol_kinds <= {"frozen", "finetune", "language", "image_text"}
    for method in ("write_dataset", "open", "validation_suite", "build_encoder", "feed", "evaluate", "baselines",
                   "run_baseline"):
        assert getattr(type(m), method) is not getattr(Modality, method), f"{name} does not implement {method}"


def test_image_objectives_train_on_the_images_of_an_image_text_dataset(pair_dataset: Path) -> None:
    from ssl_tasks.modalities.image.feed import ImageFeed
    from ssl_tasks.modalities.image_text.shards import PairDataset
    from ssl_tasks.objectives import OBJECTIVES
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
    from ssl_tasks.training.feeds import open_feed

    def job(objective: str, tokenizer: str = "") -> TrainJob:
        return TrainJob(run=objective, seed=0, data_dir=str(pair_dataset), objective=objective,
                        objective_config=objective_config(objective, {}),
                        encoder="small_cnn", encoder_kwargs={}, train=TrainConfig(), mean=(0.5,) * 3,
                        std=(0.25,) * 3, tokenizer=tokenizer)

    feed = open_feed(job("simclr"))
    assert isinstance(feed, ImageFeed) and feed.count() == PairDataset(pair_dataset).count("train")
    with pytest.raises(Exception, match="caption tokenizer"):  # a two-tower objective gets the pair feed
        open_feed(job("clip"))
    pairs = get_modality("image_text")
    assert pairs.needs_tokenizer(OBJECTIVES.get("clip")) and not pairs.needs_tokenizer(OBJECTIVES.get("simclr"))


def _vectors_csv(path: Path, n: int = 240, dim: int = 8, seed: int = 0) -> Path:
    """Two labelled Gaussian clusters in ``dim`` dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dim)) + np.where(y[:, None] == 1, 2.0, -2.0)
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(dim)])
    table["label"] = np.where(y == 1, "up", "down")
    table.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_modality_from_outside_the_library_runs_through_dvc_repro(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    shutil.copy(TESTS / "toy_modality.py", root / "toy_modality.py")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.update(
        plugins=["toy_modality"],
        datasets={"vec": {"source": "vectors_csv", "path": str(_vectors_csv(tmp_path / "vec.csv"))}},
        runs={"noise": {"dataset": "vec", "objective": "noise_contrast", "encoder": "vector_mlp",
                        "encoder_kwargs": {"width": 32}}},
    )
    params["train"].update(epochs=2, batch_size=64, warmup_epochs=0)
    params["evaluation"]["settings"].update(finetune_epochs=2, linear_epochs=20)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert sorted(line[3:] for line in changed) == ["params.yaml", "toy_modality.py"]  # nothing else is edited

    res = repro(root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    board = pd.read_csv(root / "artifacts" / "leaderboard.csv")
    ref = board.set_index("name").loc["noise", "reference"]
    assert ref.startswith("random_init-vector_mlp-") and set(board["name"]) == {"noise", ref, "raw_input@vec"}
    for col in ("knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1"):
        assert board[col].between(0.0, 1.0).all(), col
    assert board.set_index("name").loc["noise", "knn/top1"] > 0.9  # the clusters are far apart
    assert "knn/top1 margin" in board.columns
    report = yaml.safe_load((root / "reports" / "validate" / "vec.json").read_text())
    assert report["success"] and any("every value finite" in e["name"] for e in report["expectations"])
    again = repro(root)
    assert noop_repro(again), again.stdout
