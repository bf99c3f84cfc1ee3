"""A stage that fails under ``dvc repro`` leaves its previous output in place (issue 25, item 2).

DVC deletes a stage's outputs before it runs the command, unless the output is ``persist: true``; every stage
writes its outputs atomically (a temporary sibling renamed into place), so with ``persist`` a failing stage leaves
the last good output, and a succeeding one replaces it whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, copy_project, repro


def test_every_stage_output_persists() -> None:
    """The mechanism, checked on the DAG itself: no output of any stage is deleted by DVC before its command."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for key in ("outs", "metrics"):
            for out in body.get(key, []):
                path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
                if not opts.get("persist"):
                    missing.append(f"{name}: {path}")
    assert not missing, f"outputs DVC would delete before the stage runs: {missing}"


@pytest.mark.slow
def test_failing_ingest_under_dvc_repro_keeps_the_previous_dataset(tmp_path: Path) -> None:
    from PIL import Image

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
    manifest = (root / "data" / "pngs" / "manifest.json").read_bytes()

    png = images / "a" / "0.png"
    png.write_bytes(png.read_bytes()[:40])  # truncated: the ingest now fails
    raw["datasets"]["pngs"]["split_seed"] = 1  # a params change, so DVC reruns the stage
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    second = repro(root, "ingest@pngs")
    assert second.returncode != 0
    assert "cannot read image" in second.stdout + second.stderr
    assert (root / "data" / "pngs" / "manifest.json").read_bytes() == manifest
    assert not list((root / "data").glob(".*tmp")), "no temporary folder left"
