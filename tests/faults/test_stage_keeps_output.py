"""A stage that fails under ``dvc repro`` gets its previous output back (issue 25, item 2).

DVC deletes a stage's outputs before it runs the command and rewrites the stage's ``dvc.lock`` entry only when the
command succeeds. Every output but metrics and compare's is cached, so after a failure the last good output is still
in the DVC cache and still named by ``dvc.lock``: ``dvc checkout`` restores it, and ``make run`` (``ssl-tasks repro``)
and the flow's stage runner do so themselves. No output is ``persist: true``: DVC never run-caches such a stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, copy_project, repro


def _outputs(stage: dict) -> list[tuple[str, str, dict]]:
    """(kind, path, options) of every output of a dvc.yaml stage (``foreach`` bodies included)."""
    body = stage.get("do", stage)
    found = []
    for kind in ("outs", "metrics", "plots"):
        for out in body.get(kind, []):
            path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            found.append((kind, path, opts or {}))
    return found


def test_every_last_good_output_is_in_the_dvc_cache() -> None:
    """The mechanism, on the DAG itself: no output is persistent (DVC would never run-cache its stage), and every
    output but metrics and compare's is cached, so a failed stage's last good output is in the DVC cache. The
    ``lineage`` stage is the exception by design: it runs on every repro (never run-cached) and keeps its hash files
    across runs (ssl_tasks/pipeline/lineage.py)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    persistent, uncached = [], []
    for name, stage in stages.items():
        if name == "lineage":
            assert stage.get("always_changed") is True
            continue
        for kind, path, opts in _outputs(stage):
            if opts.get("persist"):
                persistent.append(f"{name}: {path}")
            if opts.get("cache") is False and kind == "outs" and name != "compare":
                uncached.append(f"{name}: {path}")
    assert not persistent, f"persistent outputs (DVC never run-caches their stages): {persistent}"
    assert not uncached, f"uncached outputs (a failed stage could not get them back): {uncached}"
    compare = {path: opts.get("cache") for _, path, opts in _outputs(stages["compare"])}
    assert compare and set(compare.values()) == {False}, "compare must run, never be restored from the run cache"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_failing_ingest_gets_the_previous_dataset_back(tmp_path: Path) -> None:
    from PIL import Image

    from ssl_tasks.orchestration.dvc_runner import StageFailed, repro_stage

    images = tmp_path / "pngs"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (images / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / cls / f"{i}.png")
    root = copy_project(tmp_path / "p")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["datasets"]["pngs"] = {"source": "image_folder", "path": str(images)}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    first = repro(root, "validate@pngs")  # a dataset without a validation: key validates (issue 25, item 10)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    data = root / "data" / "pngs"
    good = _tree(data)
    assert "manifest.json" in good

    png = images / "a" / "0.png"
    png.write_bytes(png.read_bytes()[:40])  # truncated: the ingest now fails
    raw["datasets"]["pngs"]["split_seed"] = 1  # a params change, so DVC reruns the stage
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    # make run's command: dvc repro, then dvc checkout when it fails
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([sys.executable, "-m", "ssl_tasks.pipeline.cli", "repro", "ingest@pngs"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "cannot read image" in run.stdout + run.stderr
    said = [line for line in run.stderr.splitlines() if line.startswith("error: dvc repro failed")]
    assert said == [f"error: dvc repro failed (exit {run.returncode}); dvc checkout restored the last good outputs "
                    "of the pipeline from the DVC cache: data/pngs"], run.stderr[-3000:]
    assert _tree(data) == good
    assert not list((root / "data").glob(".*tmp")), "no temporary folder left"

    # the flow's stage runner
    with pytest.raises(StageFailed) as err:
        repro_stage("ingest@pngs", root, {}, lambda level, line: None)
    assert str(err.value).splitlines()[-1] == ("dvc checkout restored the last good outputs of ingest@pngs from the "
                                               "DVC cache: data/pngs")
    assert _tree(data) == good

    # a bare dvc repro deletes it (DVC removes a stage's outputs before the command); dvc checkout of the stage DVC
    # names brings it back (a plain dvc checkout does too, and complains of every output this project never built)
    bare = repro(root, "ingest@pngs")
    assert bare.returncode != 0 and not data.exists()
    assert "failed to reproduce 'ingest@pngs'" in bare.stderr
    back = subprocess.run([str(Path(sys.executable).parent / "dvc"), "checkout", "ingest@pngs"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert back.returncode == 0, back.stderr
    assert _tree(data) == good
