"""params.yaml as a file (issue 25, item 10): a YAML error is one ``error:`` line with its line and column (it was
four), and a key given twice is an error naming both lines (PyYAML silently kept the last)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO

from ssl_tasks.orchestration.dvc_runner import init_without_git
from ssl_tasks.pipeline.cli import main


def _run(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    assert main(["--params", str(p), "--root", str(tmp_path), "pretrain", "--run", "simclr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {p}: "), err
    return err.strip().removeprefix(f"error: {p}: ")


def test_a_yaml_syntax_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "params.yaml").read_text().replace("epochs: 20", "epochs: [20", 1)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "epochs: [20" in x)
    # the parser notices on the next line, where the unclosed list meets a mapping key
    expected = f"invalid YAML at line {line + 1}, column 13: expected ',' or ']', but got ':'"
    assert _run(tmp_path, text, capsys) == expected


def test_a_duplicate_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "params.yaml").read_text().replace("  lr: 0.002\n", "  lr: 0.002\n  lr: 2.0\n", 1)
    line = text.splitlines().index("  lr: 0.002") + 1
    assert _run(tmp_path, text, capsys) == (f"key 'lr' is given twice in one mapping (lines {line} and {line + 1}); "
                                            "keep one, with the entries of both under it")


def test_a_pasted_top_level_key_stops_repro_before_dvc(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A dataset snippet pasted at the end of params.yaml with its own ``datasets:`` key: `make run`
    (``ssl-tasks repro``) says so in one line before DVC runs, not ruamel's DuplicateKeyError from inside ``dvc
    repro`` followed by "could not restore the last good outputs"."""
    text = (REPO / "params.yaml").read_text()
    first = text.splitlines().index("datasets:") + 1
    text += "datasets:\n  clipart: {source: image_folder, path: ../shared/data/openclipart_captions/images}\n"
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    init_without_git(tmp_path, tmp_path / "cache")
    assert main(["--root", str(tmp_path), "repro"]) == 2
    out, err = capfd.readouterr()
    last = len(text.splitlines()) - 1
    assert err == (f"error: params.yaml: key 'datasets' is given twice in one mapping (lines {first} and {last}); "
                   "keep one, with the entries of both under it\n"), err
    assert "restore" not in out + err and "stage" not in out  # DVC never ran


def test_duplicate_keys_in_different_mappings_are_fine(tmp_path: Path) -> None:
    from ssl_tasks.core.config import load_yaml

    assert load_yaml("a: {x: 1}\nb: {x: 2}\n", "t") == {"a": {"x": 1}, "b": {"x": 2}}
