"""docs/your-data.md runs as written: its ``bash`` blocks in order, in a fresh copy of the project, with its
``params.yaml`` block merged in; only the epoch budget is cut (``fast_params``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SHARED_DATA, copy_project, fast_params, needs_shared

DOC = REPO / "docs" / "your-data.md"
PARAMS_MARK = "# params.yaml: add under"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of the page, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


def doc_params() -> dict:
    """The page's params.yaml addition (the yaml block that starts with PARAMS_MARK)."""
    (text,) = [t for lang, t in blocks() if lang == "yaml" and t.startswith(PARAMS_MARK)]
    return yaml.safe_load(text)


def merged(raw: dict) -> dict:
    add = doc_params()
    assert set(add) == {"datasets", "runs"}
    raw["datasets"].update(add["datasets"])
    raw["runs"].update(add["runs"])
    return raw


def budget(raw: dict) -> dict:
    """The one substitution: 1 pretraining epoch (and fast_params' short evaluation) for every run kept."""
    raw = fast_params(raw, runs=("simclr", *doc_params()["runs"]))
    for run in raw["runs"].values():
        if "epochs" in run.get("train", {}):
            run["train"]["epochs"] = 1
    return raw


def test_the_page_params_parse_and_state_their_baselines() -> None:
    """Fast: the page's dataset needs only source, path and options, and gets the cheap baselines by default."""
    from ssl_tasks.pipeline.params import parse_params

    params = parse_params(merged(yaml.safe_load((REPO / "params.yaml").read_text())), REPO)
    ds = params.dataset("clipart")
    assert ds.options == {"image_size": 32, "background": "white"} and ds.validation.max_cross_split_duplicates is None
    assert params.baselines_for("clipart") == ("raw_pixels",)
    assert params.baselines_for("digits") == ("raw_pixels", "supervised")
    assert "add the supervised ceiling with datasets.clipart.baselines" in params.describe_baselines("clipart")
    bash = [t for lang, t in blocks() if lang == "bash"]
    assert bash and "dvc repro" in bash[-1] and "--option image_size=32" in bash[0]


def test_the_readme_shows_the_page_params_indented_under_the_existing_keys() -> None:
    """README's own-data snippet is the page's, and neither is pasteable as a second top-level key: each names the
    entries already there, so it reads as an insertion under ``datasets:`` and ``runs:``."""
    readme = [m.group(2) for m in FENCE.finditer((REPO / "README.md").read_text(encoding="utf-8"))
              if m.group(1) == "yaml" and m.group(2).startswith(PARAMS_MARK)]
    page = [t for lang, t in blocks() if lang == "yaml" and t.startswith(PARAMS_MARK)]
    assert readme == page, "README's own-data params.yaml block differs from docs/your-data.md's"
    assert "# digits: ..." in page[0] and "# simclr: ..." in page[0] and "existing" in page[0].splitlines()[0]


@pytest.mark.slow
@needs_shared(SHARED_DATA / "openclipart_captions" / "images", "the Open Clip Art drawings")
def test_the_page_runs_as_written(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)  # the page's ../shared/data, beside the project
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    outputs = []
    for lang, text in blocks():
        if lang == "yaml" and text.startswith(PARAMS_MARK):
            raw = budget(merged(yaml.safe_load((project / "params.yaml").read_text())))
            (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        elif lang == "bash":
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=project, env=env, capture_output=True,
                               text=True, timeout=1500)
            assert r.returncode == 0, f"{text}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
            outputs.append(r.stdout + r.stderr)
    ingest_out, validate_out, repro_out = outputs
    assert "wrote data/clipart_try: train=1136, test=286" in ingest_out
    assert "validation passed: 7 expectations, 2 warnings" in validate_out and "test/class=buttons" in validate_out
    assert "validate clipart: warning:" in repro_out
    assert "clipart: raw_pixels (from baselines.include)" in repro_out
    board = (project / "artifacts" / "leaderboard.md").read_text()
    assert board in repro_out  # cat showed it
    for row in ("simclr_clipart", "raw_pixels@clipart", "supervised@digits", "simclr"):
        assert f"| {row} |" in board, row
    assert "supervised@clipart" not in board and re.search(r"\| random_init-small_cnn-\w+@clipart \|", board)
