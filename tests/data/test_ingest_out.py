"""`ingest --out DIR` replaces only an empty folder or a dataset of ours; it never deletes a user's file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.image.shards import ImageDataset


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "ssl-tasks"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_cli_keeps_user_files_and_refuses_the_working_directory(tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "important.txt").write_text("keep me")
    res = cli("ingest", "--source", "sklearn_digits", "--out", "p", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to overwrite p:"), res.stderr
    assert (out / "important.txt").read_text() == "keep me" and (out / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == ["important.txt", "manifest.json"] and hidden(tmp_path) == []

    here = tmp_path / "here"
    here.mkdir()
    res = cli("ingest", "--source", "sklearn_digits", "--out", ".", cwd=here)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == "error: refusing to replace .: it is or contains the current directory; " \
                                 "choose an output folder of its own"
    assert list(here.iterdir()) == [] and hidden(tmp_path) == []


def test_only_an_empty_folder_or_our_own_dataset_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    ingest("sklearn_digits", None, out, shard_size=500)  # an empty folder
    ingest("sklearn_digits", None, out, shard_size=700)  # our dataset, replaced whole
    assert len(ImageDataset(out).manifest["splits"]["train"]["shards"]) == 3
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"shard-0000{i}.{k}.npy" for i in range(3)
                                                                 for k in ("images", "labels")]

    for extra, named in [("train/notes.txt", "train/notes.txt"), ("extra/a.txt", "extra/"), ("x.csv", "x.csv")]:
        (out / extra).parent.mkdir(exist_ok=True)
        (out / extra).write_text("mine")
        with pytest.raises(UserError, match=f"refusing to overwrite {out}: it holds {named}, which its manifest"):
            ingest("sklearn_digits", None, out)
        assert (out / extra).read_text() == "mine"
        (out / extra).unlink()
        shutil.rmtree(out / "extra", ignore_errors=True)
    ImageDataset(out).verify()  # the refused ingests left the dataset as it was


@pytest.mark.parametrize("manifest", ["{}", "not json", '{"format": "someone.elses/v1"}', "[1, 2]"])
def test_a_manifest_that_is_not_ours_protects_the_folder(tmp_path: Path, manifest: str) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    with pytest.raises(UserError, match=f"refusing to overwrite {out}: it is not an ingested dataset"):
        ingest("sklearn_digits", None, out)
    assert (out / "manifest.json").read_text() == manifest


def test_a_folder_holding_the_working_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    for out in (Path("."), Path(".."), tmp_path / "a"):
        with pytest.raises(UserError, match="it is or contains the current directory"):
            ingest("sklearn_digits", None, out)
    assert inner.is_dir() and list(inner.iterdir()) == [] and hidden(tmp_path) == hidden(tmp_path / "a") == []
    manifest = ingest("sklearn_digits", None, Path("digits"))  # a folder inside the working directory is fine
    assert manifest["splits"]["train"]["count"] == 1438 and (inner / "digits" / "manifest.json").is_file()
