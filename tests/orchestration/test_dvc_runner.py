"""The DVC adapter on real DVC: stage order, task tags and retries, one stage run as a subprocess."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml
from helpers import copy_project

from ssl_tasks.orchestration.dvc_runner import (
    GPU_TAG,
    PRETRAIN_TAG,
    RETRY_STAGES,
    StageFailed,
    init_without_git,
    repro_stage,
    stage_order,
    stage_retries,
    stage_tags,
)

REPO = Path(__file__).resolve().parents[2]


def test_stage_order_is_dvc_repro_order(tmp_path: Path) -> None:
    order = stage_order(copy_project(tmp_path / "proj"))
    assert order[0] == "lineage" and order[-1] == "compare"  # lineage feeds every ingest and pretrain
    assert order.index("lineage") < order.index("ingest@digits")
    for run in yaml.safe_load((REPO / "params.yaml").read_text())["runs"]:
        assert order.index("validate@digits") < order.index(f"pretrain@{run}") < order.index(f"evaluate@{run}")
        assert order.index("tokenizer@digits") < order.index(f"pretrain@{run}")
    assert order.index("baselines@digits") < order.index("compare")


def test_stage_tags_mark_gpu_pretraining_only(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runs"]["byol"]["train"] = {**(raw["runs"]["byol"].get("train") or {}), "use_gpu": True}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert stage_tags("pretrain@byol", tmp_path) == [PRETRAIN_TAG, GPU_TAG]
    assert stage_tags("pretrain@simclr", tmp_path) == [PRETRAIN_TAG]
    assert stage_tags("ingest@digits", tmp_path) == [] and stage_tags("compare", tmp_path) == []
    raw["train"]["use_gpu"] = True  # the shared setting tags every run's pretraining
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert stage_tags("pretrain@simclr", tmp_path) == [PRETRAIN_TAG, GPU_TAG]
    (tmp_path / "params.yaml").write_text("train: [not, a, mapping]\n")  # the stage reports bad params itself
    assert stage_tags("pretrain@simclr", tmp_path) == [PRETRAIN_TAG]


def test_only_the_io_stage_retries() -> None:
    assert RETRY_STAGES == {"ingest": 1}
    assert stage_retries("ingest@digits") == 1 and stage_retries("sub/dvc.yaml:ingest@x") == 1
    assert stage_retries("pretrain@simclr") == 0 and stage_retries("compare") == 0


def _py(code: str) -> str:
    return f'{Path(sys.executable).name} -c "{code}"'


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A two-stage DVC project without git, its own cache."""
    root = tmp_path / "tiny"
    root.mkdir()
    stages = {
        "hello": {"cmd": _py("import os; print('WARNING: loud'); print('greeting', os.environ['GREETING']); "
                             "print('\\x1b[36m(RayTrainWorker pid=1)\\x1b[0m epoch 1'); "
                             "open('out.txt', 'w').write('hi')"),
                  "deps": ["in.txt"], "outs": ["out.txt"]},  # deps: DVC's run cache needs some
        "broken": {"cmd": _py("import sys; print('step one'); print('error: no such thing', file=sys.stderr); "
                              "sys.exit(3)"),
                   "deps": ["out.txt"]},
    }
    (root / "in.txt").write_text("input\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    init_without_git(root, tmp_path / "cache")
    return root


def test_repro_stage_streams_dvc_and_reports_ran_unchanged_restored(tiny: Path) -> None:
    assert stage_order(tiny) == ["hello", "broken"]
    lines: list[tuple[int, str]] = []

    def log(level: int, line: str) -> None:
        lines.append((level, line))

    first = repro_stage("hello", tiny, {"GREETING": "from-the-flow"}, log)
    assert first["stage"] == "hello" and first["status"] == "ran" and first["seconds"] >= 0
    assert (tiny / "out.txt").read_text() == "hi"
    assert (logging.INFO, "greeting from-the-flow") in lines  # the command's own output, line by line
    assert (logging.WARNING, "WARNING: loud") in lines
    assert (logging.INFO, "(RayTrainWorker pid=1) epoch 1") in lines  # colour codes stripped: plain log text
    assert lines[0] == (logging.INFO, f"$ dvc repro --single-item hello   (in {tiny})")
    assert lines[-1][1].startswith("stage hello: ran (")

    assert repro_stage("hello", tiny, {"GREETING": "x"}, log)["status"] == "unchanged"
    (tiny / "out.txt").unlink()
    assert repro_stage("hello", tiny, {"GREETING": "x"}, log)["status"] == "restored"  # DVC's run cache
    assert (tiny / "out.txt").read_text() == "hi"


def test_failing_stage_raises_with_its_error_lines(tiny: Path) -> None:
    lines: list[tuple[int, str]] = []
    repro_stage("hello", tiny, {"GREETING": "x"}, lambda level, line: None)
    with pytest.raises(StageFailed) as err:
        repro_stage("broken", tiny, {}, lambda level, line: lines.append((level, line)))
    msg = str(err.value)
    assert msg.startswith("stage broken failed (exit ") and str(tiny) in msg
    shown = msg.splitlines()[1:]
    assert "error: no such thing" in shown and "step one" not in shown  # error lines only, when there are some
    assert any(line.startswith("ERROR: failed to reproduce 'broken'") for line in shown)  # and DVC's own
    assert (logging.ERROR, "error: no such thing") in lines and (logging.INFO, "step one") in lines
    assert not (tiny / "dvc.lock").read_text().count("broken")
