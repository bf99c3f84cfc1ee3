"""The language pipeline through `dvc repro` on a copy of the project with `configs/text.yaml`: real SST-2 and
Tiny Shakespeare subsets, every text objective on Ray, the text baselines, perplexity, one leaderboard."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SHARED_DATA
from helpers import copy_project, noop_repro, repro

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
TINY = {"max_len": 32, "width": 32, "depth": 1, "heads": 2}



def small_sst2(dest: Path) -> Path:
    """The first 500 SST-2 training phrases and 80 dev sentences (40 of each class), in SST-2's own TSV layout: every
    assertion holds at any size, and each model trained on them (five runs, the supervised baseline) and each
    evaluation (perplexity and pseudo-perplexity score every held-out row) costs its share."""
    dest.mkdir(parents=True)
    for name, n in (("train.tsv", 500), ("dev.tsv", 80)):
        with open(SHARED_DATA / "sst2" / name, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: n + 1]
        (dest / name).write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("textproj") / "p")
    data = tmp_path_factory.mktemp("textdata")
    shakespeare = data / "shakespeare.txt"
    shakespeare.write_text((SHARED_DATA / "tiny_shakespeare" / "input.txt").read_text()[:24_000])
    raw = yaml.safe_load((root / "configs" / "text.yaml").read_text())
    raw["datasets"]["sst2"]["path"] = str(small_sst2(data / "sst2"))
    raw["datasets"]["shakespeare"]["path"] = str(shakespeare)
    for d in raw["datasets"].values():
        d["tokenizer"] = {"vocab_size": 400, "num_sentinels": 16}
    for r in raw["runs"].values():
        r["encoder_kwargs"] = dict(TINY)
        r["train"] = {"epochs": 1, "batch_size": 32}
    raw["baselines"]["text_encoder_kwargs"] = dict(TINY)
    raw["train"].update(epochs=1, batch_size=32, warmup_epochs=0)
    raw["baselines"]["supervised_epochs"] = 1
    raw["evaluation"]["settings"].update(linear_epochs=20, finetune_epochs=1)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def test_text_dag_end_to_end(project: Path) -> None:
    res = repro(project)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    board = pd.read_csv(project / "artifacts" / "leaderboard.csv")
    names = set(board["name"])
    by = board.set_index("name")
    labelled_runs = ["mlm", "causal_lm", "span_corruption", "simcse"]
    refs = set(by.loc[labelled_runs, "reference"])
    assert all(r.startswith("random_init-") and r.endswith("@sst2") for r in refs)
    assert len(refs) == len({(by.loc[r, "encoder"]) for r in labelled_runs})  # one per encoder config (same kwargs)
    assert {*labelled_runs, "shakespeare_lm", *refs, "bag_of_words@sst2", "supervised@sst2", "unigram@sst2",
            "unigram@shakespeare"} == names  # unlabelled Tiny Shakespeare: no classification, no random-init row
    assert pd.isna(by.loc[by.loc["causal_lm", "reference"], "perplexity/ppl"])  # the unigram row is that baseline
    sst = board[board["dataset"] == "sst2"].set_index("name")
    for col in ("knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1"):
        assert sst.loc[["mlm", "simcse", "bag_of_words@sst2", "supervised@sst2"], col].between(0, 1).all()
    ppl = board.set_index("name")["perplexity/ppl"]
    assert ppl["causal_lm"] > 1 and ppl["unigram@sst2"] > 1 and ppl["shakespeare_lm"] > 1
    assert board.set_index("name")["pseudo_perplexity/ppl"]["mlm"] > 1
    shake = board[board["dataset"] == "shakespeare"]
    assert shake["knn/top1"].isna().all()  # unlabelled: the classification protocols are skipped

    pre = project / "artifacts" / "runs" / "causal_lm" / "pretrain" / "seed-0"
    assert (pre / "tokenizer.json").is_file() and (pre / "objective.pt").is_file()  # the tokenizer travels along
    meta = json.loads((pre / "meta.json").read_text())
    assert meta["modality"] == "text" and meta["vocab_size"] == 400
    samples = (project / "artifacts" / "runs" / "causal_lm" / "eval" / "samples-seed-0.txt").read_text()
    assert samples.count("[") >= 3 and len(samples) > 50

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ssl-tasks")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    lm = runs["causal_lm"]
    assert lm.data.tags["modality"] == "text" and "eval/perplexity/ppl" in lm.data.metrics
    arts = {a.path for a in client.list_artifacts(lm.info.run_id, "samples")}
    assert arts == {"samples/samples-seed-0.txt"}
    assert {a.path for a in client.list_artifacts(lm.info.run_id, "checkpoint")} >= {"checkpoint/tokenizer.json"}

    again = repro(project)
    assert noop_repro(again), again.stdout
