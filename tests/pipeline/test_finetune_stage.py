"""The ``evaluate@<run>`` stage with ``finetune`` on: the run and its random-init row both get ``finetune/top1``
under the identical budget, and the leaderboard prints them side by side with the margin (in process, real digits,
a real MLflow store; marked slow for MLflow's start-up)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ssl_tasks.core.io import write_json_atomic
from ssl_tasks.core.modality import get_modality
from ssl_tasks.data.ingest import ingest
from ssl_tasks.pipeline import runs
from ssl_tasks.pipeline.evaluate import evaluate
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.leaderboard import build_leaderboard, to_markdown
from ssl_tasks.pipeline.params import parse_params
from ssl_tasks.tracking import mlflow_tracking as mt

pytestmark = pytest.mark.slow


def test_evaluate_stage_puts_finetune_beside_its_equal_budget_random_init(tmp_path: Path, monkeypatch,  # noqa: ANN001
                                                                          capsys) -> None:  # noqa: ANN001
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    layout = Layout(tmp_path)
    ingest("sklearn_digits", None, layout.data("digits"), test_fraction=0.2, split_seed=0)
    params = parse_params({
        "datasets": {"digits": {"source": "sklearn_digits"}},
        "runs": {"r": {"dataset": "digits", "objective": "simclr", "encoder": "small_cnn",
                       "encoder_kwargs": {"width": 8}}},
        "evaluation": {"protocols": ["knn", "finetune"],
                       "settings": {"finetune_epochs": 2, "finetune_batch_size": 256}},
    })
    uri, exp = runs.tracking(params, tmp_path)
    run_id = mt.start_run(uri, exp, "r", {}, {})
    modality = get_modality("image")
    meta = {"modality": "image", "objective": "simclr", "encoder": "small_cnn", "encoder_kwargs": {"width": 8},
            "channels": 1, "image_size": 8, "mean": [0.3], "std": [0.4], "mlflow_run_id": run_id, "collapsed": False}
    pdir = layout.pretrain_dir("r")
    torch.manual_seed(0)
    enc = modality.build_encoder("small_cnn", {"width": 8}, meta)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.05 * torch.randn_like(p))  # stands in for pretrained weights: anything but the init
    (pdir / "seed-0").mkdir(parents=True)
    torch.save(enc.state_dict(), pdir / "seed-0" / "encoder.pt")
    write_json_atomic(pdir / "seed-0" / "meta.json", meta)
    write_json_atomic(pdir / "seeds.json", {"seeds": [0]})

    out = evaluate(params, "r", layout)
    rows = out["rows"]
    ref = rows["r"]["reference"]
    assert rows[ref]["kind"] == "random_init" and {"knn/top1", "finetune/top1"} <= set(rows[ref]["metrics"])
    assert {"knn/top1", "finetune/top1"} <= set(rows["r"]["metrics"])
    assert json.loads((layout.eval_dir("r") / "label_subsets.json").read_text()) == {}  # all labels: no draw

    n_train = get_modality("image").open(layout.data("digits")).count("train")
    err = capsys.readouterr().err
    budget = dict(re.findall(r"evaluate (r|r random init): finetune: fine-tuning (.*) \.\.\.", err))
    assert set(budget) == {"r", "r random init"} and budget["r"] == budget["r random init"]
    assert budget["r"].startswith(f"{n_train} labelled examples for 2 epochs (batch 256, {2 * -(-n_train // 256)} "
                                  "steps, lr 0.001, views [crop ")

    md = to_markdown(build_leaderboard(rows, params.evaluation.protocols), params.evaluation)
    run_ft, ref_ft = rows["r"]["metrics"]["finetune/top1"], rows[ref]["metrics"]["finetune/top1"]
    assert f"| r | {run_ft:.4f} | {ref} | {ref_ft:.4f} | {run_ft - ref_ft:+.4f} |" in md
