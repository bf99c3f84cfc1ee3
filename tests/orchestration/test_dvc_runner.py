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
    repro_or_restore,
    repro_stage,
    restore_outputs,
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


def test_stage_order_refuses_a_params_file_with_a_key_given_twice(tmp_path: Path) -> None:
    """The flow plans its stages first: a second top-level ``runs:`` stops it with the project's one-line error."""
    from ssl_tasks.core.errors import UserError

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text() + "runs:\n  extra: {dataset: digits}\n")
    with pytest.raises(UserError, match=r"^params.yaml: key 'runs' is given twice in one mapping \(lines \d+ and"):
        stage_order(tmp_path)


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


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A two-stage DVC project without git: ``first`` copies in.txt to a.txt, ``second`` writes b/ from a.txt; every
    output cached. ``second`` fails before writing while a file EARLY exists (as every stage of ours does: atomic
    writes), and after writing part of b/ while a file LATE exists."""
    root = tmp_path / "chain"
    root.mkdir()
    second = ("import os, sys; os.path.exists('EARLY') and sys.exit(4); d = open('a.txt').read(); "
              "os.makedirs('b', exist_ok=True); open('b/part', 'w').write('partial ' + d); "
              "os.path.exists('LATE') and sys.exit(4); open('b/done', 'w').write(d)")
    stages = {"first": {"cmd": _py("open('a.txt', 'w').write(open('in.txt').read())"), "deps": ["in.txt"],
                        "outs": ["a.txt"]},
              "second": {"cmd": _py(second), "deps": ["a.txt"], "outs": ["b"]}}
    (root / "in.txt").write_text("v1\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    init_without_git(root, tmp_path / "cache")
    return root


def _outputs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "b").iterdir()}


def test_failed_repro_restores_the_failed_stage_and_keeps_the_new_outputs_before_it(
        chain: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``ssl-tasks repro`` (``make run``): ``dvc repro`` reruns both stages and fails in ``second``; a plain
    ``dvc checkout`` brings back ``second``'s last good b/ (DVC deleted it) and leaves ``first``'s new a.txt,
    whose lock entry the repro rewrote. The exit stays non-zero and one line says what came back."""
    assert repro_or_restore([], chain) == 0
    good = _outputs(chain)
    assert good == {"part": b"partial v1\n", "done": b"v1\n"}
    capfd.readouterr()
    (chain / "in.txt").write_text("v2\n")
    (chain / "EARLY").write_text("")
    rc = repro_or_restore([], chain)
    err = capfd.readouterr().err
    assert rc != 0
    assert (chain / "a.txt").read_text() == "v2\n"  # first succeeded in this repro: its new output stays
    assert _outputs(chain) == good  # second's last good output, back from the cache
    said = [line for line in err.splitlines() if line.startswith("error: dvc repro failed")]
    assert said == [f"error: dvc repro failed (exit {rc}); dvc checkout restored the last good outputs of the "
                    "pipeline from the DVC cache: b"], err


def test_failed_stage_of_the_flow_gets_its_last_good_outputs_back(chain: Path) -> None:
    """The flow's stage runner: a stage that fails after writing part of its output gets its last good output
    back (a checkout of that stage, forced over what the failed command wrote) and still raises StageFailed."""
    repro_stage("first", chain, {}, lambda level, line: None)
    repro_stage("second", chain, {}, lambda level, line: None)
    good = _outputs(chain)
    (chain / "in.txt").write_text("v2\n")
    (chain / "LATE").write_text("")
    repro_stage("first", chain, {}, lambda level, line: None)
    lines: list[tuple[int, str]] = []
    with pytest.raises(StageFailed) as err:
        repro_stage("second", chain, {}, lambda level, line: lines.append((level, line)))
    said = "dvc checkout restored the last good outputs of second from the DVC cache: b"
    assert str(err.value).splitlines()[-1] == said and (logging.WARNING, said) in lines
    assert _outputs(chain) == good
    assert (chain / "a.txt").read_text() == "v2\n"
    (chain / "dvc.lock").unlink()  # a stage that never succeeded has no lock entry: nothing to restore
    assert restore_outputs(chain, ["second"]) == "dvc checkout: no output of second needed restoring"
